"""Training of one classifier on one dataset, with the paper's settings by default.

Lee et al. 2021 train every network with SGD (momentum 0.9, weight decay 0.005, learning rate
0.001) in batches of 8. Here one call of `train_classifier` is one Snakemake job (rule
``train_model``): a (dataset, network) pair, reading the images of the training split (plus
the materialized augmented ones) and validating on the validation split after every epoch.

Outputs, in the job's folder (``results/models/<dataset>/<model>/``):

- ``model.keras``: the weights of the epoch with the lowest validation loss (early stopping
  restores them), with the preprocessing the model expects stored inside the file
  (`read_preprocessing`), so ``cacflow predict`` cannot pair it with other images;
- ``history.csv``: loss and accuracy per epoch, training and validation;
- ``summary.tsv``: one row (`SUMMARY_COLUMNS`): parameters, epochs, best validation
  accuracy, wall time, training images/s, device, settings.

Resume: `keras.callbacks.BackupAndRestore` writes the state at the end of every epoch in
``backup/``; a job killed (even with kill -9) and started again continues from the last epoch
it finished. The folder is removed once the model is saved.

Determinism: `keras.utils.set_random_seed` and op determinism make two CPU runs with the same
seed give the same history. Mixed precision (and XLA) only where a GPU is present.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv
import logging
import platform
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from cacflow import settings_from_config
from cacflow.learning.augment import AugmentSettings
from cacflow.learning.inputs import (
    CLASSES,
    ImageTable,
    InputPipeline,
    PipelineSettings,
    build_pipeline,
    split_table,
)
from cacflow.learning.model_file import Preprocessing, save_model
from cacflow.learning.models import batchnorm_layers, build_model, count_parameters, weights_mode
from cacflow.reporting.evaluation import PREDICTED_SPLITS, PREDICTION_COLUMNS
from cacflow.tables import read_tsv, write_tsv

log = logging.getLogger("cacflow.learning.training")

SUMMARY_COLUMNS = (
    "dataset",
    "model",
    "image_size",
    "parameters",
    "trainable_parameters",
    "train_images",
    "validation_images",
    "epochs_run",
    "steps_per_epoch",
    "best_epoch",
    "best_val_accuracy",
    "best_val_loss",
    "train_seconds",
    "wall_seconds",
    "train_images_per_s",
    "inference_ms_batch1",
    "inference_ms_batch32",
    "device",
    "mixed_precision",
    "xla",
    "weights",
    "seed",
)


class TrainingError(ValueError):
    """Training cannot start: no images, one class only, impossible settings."""


@dataclass(frozen=True)
class TrainSettings:
    """Fed from the workflow's ``training:`` config section."""

    models: tuple[str, ...] = ("resnet50", "inception_resnet_v2", "vgg16", "vgg19")
    image_size: int = 299  # side of the model's input; images are resized to it
    epochs: int = 30
    early_stopping_patience: int = 5  # epochs without a lower validation loss; 0 = off
    steps_per_epoch: int = 0  # 0 = one pass over the training images per epoch
    validation_images: int = 0  # per-epoch validation on a fixed random subset; 0 = all
    optimizer: str = "sgd"  # sgd (the paper's, with `momentum`) | adam
    learning_rate: float = 0.001
    # Steps over which the learning rate rises linearly from 0 to `learning_rate` (0 = none).
    warmup_steps: int = 0
    # constant, or cosine: after the warm-up, down to 0 at the last step of the last epoch.
    learning_rate_schedule: str = "constant"
    momentum: float = 0.9
    weight_decay: float = 0.005
    dropout: float = 0.5
    # > 0: the loss's targets are 1 - s and s instead of 1 and 0, which bounds the logits a
    # network can gain from (without it they grow without limit and P(calcium) saturates).
    label_smoothing: float = 0.0
    # Momentum of BatchNormalization's moving statistics (Keras' default 0.99 averages over
    # ~100 steps: a short training never reaches them).
    batchnorm_momentum: float = 0.99
    # > 0: before every validation, the statistics inference uses are recomputed as the mean
    # over this many batches of training images (`recompute_batchnorm_statistics`).
    batchnorm_batches: int = 0
    # ... from which images: "training" (batches as training makes them: balanced and
    # augmented, the statistics the network learned under) or "natural" (training images in
    # their natural class shares, unaugmented, as inference meets them).
    batchnorm_source: str = "training"
    weights: str = "none"  # none | imagenet | path to a weights file
    class_weight: str = "balanced"  # balanced | none
    mixed_precision: str = "auto"  # auto (GPU only) | on | off; never on a CPU
    xla: str = "off"  # auto (GPU only) | on | off
    deterministic: bool = True

    @classmethod
    def from_config(cls, config: Mapping, model: str | None = None) -> TrainSettings:
        """The ``training:`` section, with `model`'s keys of ``per_model`` in place of the
        section's."""
        overrides = dict(config.get("per_model", {}).get(model, {})) if model else {}
        unknown = sorted(set(overrides) - (set(cls.__dataclass_fields__) - {"models"}))
        if unknown:
            raise TrainingError(f"training.per_model.{model}: not a per-network setting: {unknown}")
        return settings_from_config(cls, {**config, **overrides})


@dataclass(frozen=True)
class TrainPaths:
    dataset_root: Path  # results/datasets/<dataset>
    splits: Path  # results/splits/patients.tsv
    augmented_root: Path | None  # results/augmented/<dataset>, or None
    out_dir: Path  # results/models/<dataset>/<model>
    predictions: Path | None = None  # predictions of the validation and test images


def gpu_present() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def _switch(value: str, on_gpu: bool, name: str) -> bool:
    if value == "auto":
        return on_gpu
    if value in ("on", True):
        if not on_gpu:
            log.warning("training.%s: on, but no GPU: left off on the CPU", name)
        return on_gpu
    return False


def train_classifier(
    dataset: str,
    model_name: str,
    paths: TrainPaths,
    settings: TrainSettings,
    pipeline_settings: PipelineSettings,
    augment: AugmentSettings | None,
    datasets_config: Mapping,
    seed: int,
    threads: int = 0,
) -> dict:
    """Train `model_name` on `dataset`; write the outputs listed in the module docstring and
    return the summary row. `threads` > 0 caps TensorFlow's CPU threads."""
    started = time.perf_counter()
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    out_dir = Path(paths.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    on_gpu = gpu_present()
    mixed = _switch(settings.mixed_precision, on_gpu, "mixed_precision")
    xla = _switch(settings.xla, on_gpu, "xla")
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    device = _device_name(on_gpu)
    log.info("%s/%s on %s (mixed precision %s, XLA %s)", dataset, model_name, device, mixed, xla)

    train, validation, statistics = _pipelines(paths, settings, pipeline_settings, augment, seed)
    log.info(
        "training images %d %s, validation images %d %s",
        len(train.table),
        train.class_counts,
        len(validation.table),
        validation.class_counts,
    )
    size = settings.image_size
    model = build_model(
        model_name,
        (size, size, pipeline_settings.channels),
        weights=None if weights_mode(settings.weights) == "none" else settings.weights,
        dropout=settings.dropout,
        batchnorm_momentum=settings.batchnorm_momentum,
    )
    steps = settings.steps_per_epoch or train.steps_per_epoch(pipeline_settings.batch_size)
    compile_model(model, settings, xla, total_steps=settings.epochs * steps)
    build_training_state(model, (size, size, pipeline_settings.channels))
    parameters = count_parameters(model)
    log.info("%s: %s", model_name, parameters)

    backup_dir = out_dir / "backup"
    history_path = out_dir / "history.csv"
    resuming = backup_dir.is_dir() and any(backup_dir.iterdir())
    if not resuming:
        history_path.unlink(missing_ok=True)  # a stale history of a finished or other run
    else:
        log.info("resuming from %s", backup_dir)
    timer = _BatchTimer(pipeline_settings.batch_size)
    callbacks = [
        # Two states kept: a kill -9 while the newest is written leaves a corrupt file, and
        # the restart then falls back to the epoch before (seen in CI).
        keras.callbacks.BackupAndRestore(
            str(backup_dir), delete_checkpoint=False, double_checkpoint=True
        ),
        keras.callbacks.CSVLogger(str(history_path), append=True),
        timer,
        _EpochLog(),
    ]
    if statistics is not None and batchnorm_layers(model):
        callbacks.insert(0, _BatchNormStatistics(statistics))
    if settings.early_stopping_patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=settings.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    else:
        callbacks.append(_BestWeights())
    model.fit(
        train.dataset,
        validation_data=validation.dataset,
        epochs=settings.epochs,
        steps_per_epoch=steps,
        class_weight=train.class_weights if settings.class_weight == "balanced" else None,
        callbacks=callbacks,
        verbose=0,
    )
    _restore_best(model, callbacks)
    history = clean_history(history_path)
    best = min(history, key=lambda row: float(row["val_loss"]))
    preprocessing = Preprocessing(
        dataset=dataset,
        model=model_name,
        image_size=size,
        channels=pipeline_settings.channels,
        datasets=dict(datasets_config),
        resize=pipeline_settings.resize,
    )
    save_model(model, out_dir / "model.keras", preprocessing)
    shutil.rmtree(backup_dir, ignore_errors=True)
    if paths.predictions is not None:
        rows = predict_splits(model, dataset, model_name, paths, settings, pipeline_settings)
        write_tsv(Path(paths.predictions), rows, PREDICTION_COLUMNS)
    timing = inference_ms(model, (size, size, pipeline_settings.channels))
    train_images = timer.images
    row = {
        "dataset": dataset,
        "model": model_name,
        "image_size": size,
        **{k: parameters[k] for k in ("parameters", "trainable_parameters")},
        "train_images": len(train.table),
        "validation_images": len(validation.table),
        "epochs_run": len(history),
        "steps_per_epoch": steps,
        "best_epoch": int(best["epoch"]) + 1,
        "best_val_accuracy": round(float(best["val_accuracy"]), 6),
        "best_val_loss": round(float(best["val_loss"]), 6),
        "train_seconds": round(timer.seconds, 2),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "train_images_per_s": round(train_images / timer.seconds, 2) if timer.seconds else 0.0,
        **timing,
        "device": device,
        "mixed_precision": mixed,
        "xla": xla,
        "weights": _weights_label(settings.weights),
        "seed": seed,
    }
    log.info("done: %s", row)
    return row


def _pipelines(
    paths: TrainPaths,
    settings: TrainSettings,
    pipeline_settings: PipelineSettings,
    augment: AugmentSettings | None,
    seed: int,
) -> tuple[InputPipeline, InputPipeline, tf.data.Dataset | None]:
    """Training and validation pipelines, and the batches of images the BatchNormalization
    statistics are recomputed from (None unless ``batchnorm_batches``)."""
    augmented_root = paths.augmented_root if pipeline_settings.include_augmented else None
    tables = {
        split: split_table(paths.dataset_root, paths.splits, split, augmented_root)
        for split in ("train", "validation")
    }
    for split, table in tables.items():
        if len(table) == 0:
            raise TrainingError(f"{paths.dataset_root}: no labelled {split} images")
        if split == "train" and len(set(table.labels.tolist())) < 2:
            raise TrainingError(f"{paths.dataset_root}: the training images hold one class only")
    train = build_pipeline(
        tables["train"],
        pipeline_settings,
        training=True,
        seed=seed,
        augment=augment,
        image_size=settings.image_size,
        repeat=bool(settings.steps_per_epoch),
    )
    statistics = None
    if settings.batchnorm_batches > 0:
        statistics = statistics_batches(tables["train"], settings, pipeline_settings, seed, augment)
    validation_table = tables["validation"]
    if 0 < settings.validation_images < len(validation_table):
        if pipeline_settings.balanced_batches:
            validation_table = balanced_subset(validation_table, settings.validation_images, seed)
        else:
            validation_table = subset(validation_table, settings.validation_images, seed)
    validation = build_pipeline(
        validation_table,
        pipeline_settings,
        training=False,
        seed=seed,
        image_size=settings.image_size,
    )
    return train, validation, statistics


def statistics_batches(
    table: ImageTable,
    settings: TrainSettings,
    pipeline_settings: PipelineSettings,
    seed: int,
    augment: AugmentSettings | None = None,
) -> tf.data.Dataset:
    """The ``batchnorm_batches`` batches of images the BatchNormalization statistics are
    recomputed from, in training-size batches: made as training makes them (source
    ``training``: balanced and, with `augment`, augmented), or a fixed random subset of the
    training images in their natural class shares, unaugmented (``natural``)."""
    if settings.batchnorm_source == "training":
        pipeline = build_pipeline(
            table,
            pipeline_settings,
            training=True,
            seed=seed + 1,
            augment=augment,
            image_size=settings.image_size,
            repeat=True,
        )
        # Cached: every recomputation (one per epoch) uses the same batches.
        batches = pipeline.dataset.take(settings.batchnorm_batches)
        return batches.map(lambda images, labels: images).cache()
    n = min(len(table), settings.batchnorm_batches * pipeline_settings.batch_size)
    pipeline = build_pipeline(
        subset(table, n, seed + 1),
        replace(pipeline_settings, eval_batch_size=pipeline_settings.batch_size),
        training=False,
        seed=seed,
        image_size=settings.image_size,
    )
    return pipeline.dataset.map(lambda images, labels: images)


def compile_model(
    model: keras.Model, settings: TrainSettings, xla: bool = False, total_steps: int = 0
) -> None:
    """The optimizer of `settings` (the paper's: SGD with momentum and weight decay) with its
    learning-rate schedule over `total_steps`, and the loss."""
    loss = "sparse_categorical_crossentropy"
    if settings.label_smoothing > 0:
        loss = SmoothedSparseCrossentropy(settings.label_smoothing)
    model.compile(
        optimizer=make_optimizer(settings, total_steps),
        loss=loss,
        metrics=["accuracy"],
        jit_compile=xla,
    )


@keras.saving.register_keras_serializable(package="cacflow")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of class-index labels against smoothed one-hot targets (Keras' sparse
    loss has no label smoothing)."""

    def __init__(self, label_smoothing: float = 0.1, name: str = "smoothed_crossentropy", **kw):
        super().__init__(name=name, **kw)
        self.label_smoothing = float(label_smoothing)
        self._inner = keras.losses.CategoricalCrossentropy(label_smoothing=self.label_smoothing)

    def call(self, y_true, y_pred):
        classes = keras.ops.shape(y_pred)[-1]
        index = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        return self._inner(keras.ops.one_hot(index, classes), y_pred)

    def get_config(self) -> dict:
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def make_optimizer(settings: TrainSettings, total_steps: int = 0) -> keras.optimizers.Optimizer:
    learning_rate = learning_rate_schedule(settings, total_steps)
    if settings.optimizer == "sgd":
        return keras.optimizers.SGD(
            learning_rate=learning_rate,
            momentum=settings.momentum,
            weight_decay=settings.weight_decay,
        )
    if settings.optimizer == "adam":
        return keras.optimizers.Adam(
            learning_rate=learning_rate, weight_decay=settings.weight_decay
        )
    raise TrainingError(f"training.optimizer: sgd or adam, got {settings.optimizer!r}")


def learning_rate_schedule(settings: TrainSettings, total_steps: int = 0):
    """`settings.learning_rate`, or a Keras schedule (saved with the model, no custom class):
    a linear warm-up over ``warmup_steps``, then constant or a cosine down to 0 at
    `total_steps`."""
    if settings.learning_rate_schedule not in ("constant", "cosine"):
        raise TrainingError(
            "training.learning_rate_schedule: constant or cosine, got "
            f"{settings.learning_rate_schedule!r}"
        )
    cosine = settings.learning_rate_schedule == "cosine"
    if settings.warmup_steps <= 0 and not cosine:
        return settings.learning_rate
    warmup = max(0, settings.warmup_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else settings.learning_rate,
        decay_steps=max(1, total_steps - warmup),
        alpha=0.0 if cosine else 1.0,  # 1: no decay after the warm-up
        warmup_target=settings.learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def build_training_state(model: keras.Model, input_shape: tuple[int, int, int]) -> None:
    """Create the optimizer's and the metrics' variables before `fit`.

    Without a distribution strategy Keras creates them while it traces the training step, and
    a `tf.function` that creates variables is traced a second time: about 15 s more for
    InceptionResNetV2 on this CPU (docs/benchmarks.md, default_run). Nothing is trained here
    and the metrics are reset, so the history is the same."""
    model.optimizer.build(model.trainable_variables)
    x = np.zeros((1, *input_shape), np.float32)
    y = np.zeros((1,), np.int32)
    model.compute_metrics(x, y, model(x, training=False), sample_weight=None)
    model.reset_metrics()


def subset(table: ImageTable, n: int, seed: int) -> ImageTable:
    """A fixed random subset of `n` images (the same for every epoch and model)."""
    return take(table, np.sort(np.random.default_rng(seed).choice(len(table), n, replace=False)))


def balanced_subset(table: ImageTable, n: int, seed: int) -> ImageTable:
    """A fixed random subset of `n` images, half calcium as far as there are: the per-epoch
    validation of a network trained on balanced batches measures the loss it was trained
    for, and picks the best epoch on more than the one or two calcium images a random
    subset of rare tiles holds."""
    rng = np.random.default_rng(seed)
    calcium = np.flatnonzero(table.labels == 1)
    others = np.flatnonzero(table.labels != 1)
    n_calcium = min(len(calcium), n // 2)
    n_others = min(len(others), n - n_calcium)
    index = np.r_[
        rng.choice(calcium, n_calcium, replace=False), rng.choice(others, n_others, replace=False)
    ]
    return take(table, np.sort(index))


def padded(table: ImageTable, multiple: int) -> ImageTable:
    """`table` with its last image repeated up to a multiple of `multiple` images: batches of
    one shape only, so Keras traces the forward graph once, not again for a short last
    batch. The caller drops the extra predictions."""
    extra = -len(table) % multiple
    return take(table, np.r_[np.arange(len(table)), np.full(extra, len(table) - 1)])


def take(table: ImageTable, index: np.ndarray) -> ImageTable:
    return ImageTable(
        files=tuple(table.files[i] for i in index),
        labels=table.labels[index],
        patients=tuple(table.patients[i] for i in index),
        pixel_area_mm2=table.pixel_area_mm2[index],
        lesion_masks=tuple(table.lesion_masks[i] for i in index),
        candidate_mm2=None if table.candidate_mm2 is None else table.candidate_mm2[index],
    )


def predict_splits(
    model: keras.Model,
    dataset: str,
    model_name: str,
    paths: TrainPaths,
    settings: TrainSettings,
    pipeline_settings: PipelineSettings,
) -> list[dict]:
    """P(calcium) of every labelled validation and test image (`PREDICTION_COLUMNS`)."""
    root = Path(paths.dataset_root)
    manifest = {str(root / r["path"]): r for r in read_tsv(root / "manifest.tsv")}
    rows = []
    for split in PREDICTED_SPLITS:
        table = split_table(root, paths.splits, split)
        if len(table) == 0:
            continue
        pipeline = build_pipeline(
            padded(table, pipeline_settings.eval_batch_size),
            pipeline_settings,
            training=False,
            seed=0,
            image_size=settings.image_size,
        )
        probabilities = model.predict(pipeline.dataset, verbose=0)[: len(table), 1]
        for path, label, probability in zip(table.files, table.labels, probabilities, strict=True):
            source = manifest[path]
            rows.append(
                {
                    "dataset": dataset,
                    "model": model_name,
                    "split": split,
                    "patient_id": source["patient_id"],
                    "slice": source["slice"],
                    "tile": source["tile"],
                    "path": source["path"],
                    "label": CLASSES[int(label)],
                    "probability": f"{float(probability):.6f}",
                }
            )
        log.info("predicted %d %s images", len(table), split)
    return rows


def inference_ms(model: keras.Model, input_shape: tuple[int, int, int]) -> dict[str, float]:
    """Milliseconds per image of `predict` in batches of 1 and of 32 (after one warm-up
    batch), the paper's Table 1 measure. The input has the structure of the prediction
    pipelines, so the forward graph traced by `predict_splits` is reused for batches of 32
    (batches of 1 trace it once more)."""
    timing = {}
    for batch, repeats in ((32, 3), (1, 10)):
        n = batch * (repeats + 1)
        x = np.random.default_rng(0).random((n, *input_shape), dtype=np.float32)
        data = tf.data.Dataset.from_tensor_slices((x, np.zeros(n, np.int32))).batch(batch)
        model.predict(data.take(1), verbose=0)
        start = time.perf_counter()
        model.predict(data.skip(1), verbose=0)
        elapsed = time.perf_counter() - start
        timing[f"inference_ms_batch{batch}"] = round(1000 * elapsed / (repeats * batch), 3)
    return {key: timing[key] for key in sorted(timing)}  # batch1, batch32: the summary's order


def recompute_batchnorm_statistics(model: keras.Model, batches) -> int:
    """Replace the moving mean and variance of every BatchNormalization layer by the mean of
    its batch statistics over `batches` (images), the network in training mode ("precise
    BN", Wu & Johnson 2021). With few training steps Keras' moving averages still carry
    their initial values and the network's earlier weights; inference then normalizes
    with statistics the network never had. Returns the number of batches."""
    return BatchNormStatistics(model)(batches)


class BatchNormStatistics:
    """`recompute_batchnorm_statistics` with its forward pass compiled once and kept, for a
    recomputation before every validation (eagerly, one pass of 16 batches took 30 s for
    ResNet50 and 80 s for InceptionResNetV2 at 75 px on one core; compiled, 6 s)."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        self.layers = batchnorm_layers(model)
        # The layers read their momentum at each call: a variable lets one compiled graph
        # take a new value per batch.
        self.momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32)
        self._forward = tf.function(self._update, reduce_retracing=True)

    def _update(self, images):
        self.model(images, training=True)

    def __call__(self, batches) -> int:
        momenta = [layer.momentum for layer in self.layers]
        n = 0
        try:
            for layer in self.layers:
                layer.momentum = self.momentum
            for images in batches:
                n += 1
                # The running value becomes the mean of the n batch values: the first batch
                # replaces the old statistics (momentum 0), batch n weighs 1/n.
                self.momentum.assign(1.0 - 1.0 / n)
                self._forward(images)
        finally:
            for layer, momentum in zip(self.layers, momenta, strict=True):
                layer.momentum = momentum
        return n


class _BatchNormStatistics(keras.callbacks.Callback):
    """Recomputes the BatchNormalization statistics before each validation in `fit`, so
    that validation, the best epoch chosen by it and the saved model use them."""

    def __init__(self, batches: tf.data.Dataset) -> None:
        super().__init__()
        self.batches = batches
        self.recompute = None

    def on_test_begin(self, logs=None):
        if self.recompute is None:
            self.recompute = BatchNormStatistics(self.model)
        n = self.recompute(self.batches)
        log.debug("BatchNormalization statistics recomputed over %d batches", n)


class _BatchTimer(keras.callbacks.Callback):
    """Seconds spent in training batches and images seen (validation excluded). The first
    batch, which also builds the training graph, is left out."""

    def __init__(self, batch_size: int) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.seconds = 0.0
        self.images = 0
        self._start = 0.0
        self._warm = False

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if not self._warm:
            self._warm = True
            return
        self.seconds += time.perf_counter() - self._start
        # Keras does not hand the batch to callbacks: a short last batch counts as full.
        self.images += self.batch_size


class _EpochLog(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log.info(
            "epoch %d: %s",
            epoch + 1,
            ", ".join(f"{k} {float(v):.4f}" for k, v in sorted(logs.items())),
        )


class _BestWeights(keras.callbacks.Callback):
    """Keeps the weights of the lowest validation loss when early stopping is off."""

    def __init__(self) -> None:
        super().__init__()
        self.best_loss = float("inf")
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        loss = float((logs or {}).get("val_loss", float("inf")))
        if loss < self.best_loss:
            self.best_loss, self.best_weights = loss, self.model.get_weights()


def _restore_best(model: keras.Model, callbacks: list) -> None:
    for callback in callbacks:
        if isinstance(callback, _BestWeights) and callback.best_weights is not None:
            model.set_weights(callback.best_weights)
        if isinstance(callback, keras.callbacks.EarlyStopping) and callback.best_weights:
            # EarlyStopping restores only when it stops early; at the last epoch, do it here.
            model.set_weights(callback.best_weights)


def clean_history(path: Path) -> list[dict]:
    """The history rows, one per epoch (a job killed between the history row and the backup
    of an epoch runs that epoch again: the last row of an epoch wins), rewritten in place."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise TrainingError(f"{path}: no epoch finished")
    by_epoch = {int(row["epoch"]): row for row in rows}
    rows = [by_epoch[k] for k in sorted(by_epoch)]
    columns = list(rows[0])
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return rows


def _device_name(on_gpu: bool) -> str:
    if on_gpu:
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        return str(details.get("device_name", "GPU"))
    return f"CPU {platform.processor() or platform.machine()} x{os.cpu_count()}"


def _weights_label(weights: str) -> str:
    mode = weights_mode(weights)
    return mode if mode != "file" else f"file:{Path(weights).name}"


def write_summary(path: Path, row: Mapping) -> None:
    write_tsv(Path(path), [dict(row)], SUMMARY_COLUMNS)
