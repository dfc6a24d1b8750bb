"""Model factory and training (cacflow.learning.models, cacflow.learning.training) on real synthetic images.

The training tests use the two-patient datasets of `mini_datasets` (SYN0006 with coronary
calcium trains, SYN0001 validates and tests) and VGG16 at 32 px: the machinery, not accuracy.
"""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cacflow.learning.inputs import CLASSES, PipelineSettings, build_pipeline, split_table
from cacflow.learning.model_file import read_preprocessing
from cacflow.learning.models import (
    REGISTRY,
    ModelError,
    batchnorm_layers,
    build_model,
    count_parameters,
)
from cacflow.learning.training import (
    SUMMARY_COLUMNS,
    SmoothedSparseCrossentropy,
    TrainingError,
    TrainPaths,
    TrainSettings,
    _pipelines,
    build_training_state,
    compile_model,
    predict_splits,
    recompute_batchnorm_statistics,
    statistics_batches,
    train_classifier,
)
from cacflow.overlays import per_model_after_overlays
from cacflow.reporting.evaluation import PREDICTION_COLUMNS
from cacflow.tables import write_tsv

TINY = TrainSettings(
    models=("vgg16",),
    image_size=32,
    epochs=2,
    steps_per_epoch=2,
    validation_images=24,
    early_stopping_patience=0,
)
DATASETS_CONFIG = {"window_center_hu": 150, "window_width_hu": 800, "grid": 3}


@pytest.fixture(scope="module")
def training_data(mini_datasets, tmp_path_factory) -> Path:
    """mini_datasets plus a split table: SYN0006 trains, SYN0001 validates and tests (its
    slices are split by the table's patients, so it is both: a test of the file plumbing)."""
    splits = tmp_path_factory.mktemp("splits") / "patients.tsv"
    write_tsv(
        splits,
        [
            {"patient_id": "SYN0006", "split": "train", "calcium": 1},
            {"patient_id": "SYN0001", "split": "validation", "calcium": 0},
        ],
        ["patient_id", "split", "calcium"],
    )
    return splits


def paths_for(mini_datasets: Path, splits: Path, out_dir: Path) -> TrainPaths:
    return TrainPaths(
        dataset_root=mini_datasets / "datasets" / "original",
        splits=splits,
        augmented_root=None,
        out_dir=out_dir,
        predictions=out_dir / "predictions.tsv",
    )


def train(mini_datasets, splits, out_dir, settings=TINY, seed=7):
    return train_classifier(
        "original",
        "vgg16",
        paths_for(mini_datasets, splits, out_dir),
        settings,
        PipelineSettings(),
        None,
        DATASETS_CONFIG,
        seed,
    )


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_registered_network_builds_with_a_two_class_head(name):
    size = REGISTRY[name].min_size
    model = build_model(name, (size, size, 3))
    assert model.output_shape == (None, 2)
    counts = count_parameters(model)
    assert counts["parameters"] == model.count_params()
    assert 0 < counts["trainable_parameters"] <= counts["parameters"]
    probabilities = model.predict(np.zeros((2, size, size, 3), np.float32), verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_inception_resnet_v2_refuses_inputs_below_75_px():
    with pytest.raises(ModelError, match="at least 75 px"):
        build_model("inception_resnet_v2", (64, 64, 3))


def test_unknown_network_is_named():
    with pytest.raises(ModelError, match="unknown model 'resnet51'"):
        build_model("resnet51", (64, 64, 3))


def test_backbone_weights_from_a_local_file(tmp_path):
    """The path for offline ImageNet weights: a Keras *_notop file of the backbone."""
    keras.utils.set_random_seed(1)
    backbone = keras.applications.VGG16(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg16_weights_notop.weights.h5"
    backbone.save_weights(path)
    model = build_model("vgg16", (32, 32, 3), weights=path)
    np.testing.assert_array_equal(
        model.get_layer("block5_conv3").get_weights()[0],
        backbone.get_layer("block5_conv3").get_weights()[0],
    )


def test_weights_that_fit_neither_model_nor_backbone_are_refused(tmp_path):
    other = keras.applications.VGG19(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "vgg19.weights.h5"
    other.save_weights(path)
    with pytest.raises(ModelError, match=r"vgg19\.weights\.h5 fits neither"):
        build_model("vgg16", (32, 32, 3), weights=path)
    with pytest.raises(ModelError, match="file not found"):
        build_model("vgg16", (32, 32, 3), weights=tmp_path / "missing.h5")


def count_traces(model: keras.Model, step: str) -> dict:
    """Counts the calls of the model's `train_step` or `predict_step`: inside Keras's compiled
    functions their Python runs only while a graph is traced."""
    calls = {"n": 0}
    original = getattr(model, step)

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    setattr(model, step, counted)
    return calls


def test_recomputed_batchnorm_statistics_are_the_mean_of_the_batch_statistics():
    """What inference normalizes with after the recomputation: per channel, the mean over the
    batches of each batch's mean and (biased) variance of the layer's input. Checked on the
    first BatchNormalization of ResNet50, whose input depends on no other one."""
    keras.utils.set_random_seed(11)
    model = build_model("resnet50", (32, 32, 3), batchnorm_momentum=0.9)
    assert {layer.momentum for layer in batchnorm_layers(model)} == {0.9}
    rng = np.random.default_rng(11)
    batches = [rng.random((4, 32, 32, 3), dtype=np.float32) * (k + 1) for k in range(3)]
    conv = keras.Model(model.input, model.get_layer("conv1_conv").output)
    inputs = [keras.ops.convert_to_numpy(conv(x)) for x in batches]
    expected_mean = np.mean([x.mean(axis=(0, 1, 2)) for x in inputs], axis=0)
    expected_variance = np.mean([x.var(axis=(0, 1, 2)) for x in inputs], axis=0)

    assert recompute_batchnorm_statistics(model, batches) == 3
    layer = model.get_layer("conv1_bn")
    np.testing.assert_allclose(layer.moving_mean.numpy(), expected_mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), expected_variance, rtol=1e-4, atol=1e-6
    )
    # The Keras initial values (0, 1) are gone, and the layers keep their momentum.
    assert np.abs(layer.moving_mean.numpy()).max() > 0.01
    assert {layer.momentum for layer in batchnorm_layers(model)} == {0.9}


def test_label_smoothing_loss_is_the_cross_entropy_against_softened_targets(tmp_path):
    loss = SmoothedSparseCrossentropy(0.1)
    y_true = np.array([0, 1])
    y_pred = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    expected = -np.mean(
        [0.95 * np.log(0.9) + 0.05 * np.log(0.1), 0.05 * np.log(0.2) + 0.95 * np.log(0.8)]
    )
    assert float(loss(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    # A model compiled with it saves and loads with the setting.
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss=loss)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.loss.label_smoothing == pytest.approx(0.1)


def test_batchnorm_statistics_come_from_the_source_asked_for(
    mini_datasets, training_data, tmp_path
):
    # natural: the training images in their class shares; training: balanced batches as
    # training makes them (half calcium in every batch).
    paths = paths_for(mini_datasets, training_data, tmp_path)
    pipeline = PipelineSettings(batch_size=4, on_the_fly=False)
    labels = {}
    for source in ("natural", "training"):
        settings = replace(TINY, batchnorm_batches=3, batchnorm_source=source)
        _, _, statistics = _pipelines(paths, settings, pipeline, None, seed=7)
        batches = [keras.ops.convert_to_numpy(b) for b in statistics]
        assert len(batches) == 3 and {b.shape[0] for b in batches} == {4}, source
        labels[source] = batches
    train_table = split_table(paths.dataset_root, paths.splits, "train")
    share = float(np.mean(train_table.labels == CLASSES.index("calcium")))
    assert 0 < share < 0.5  # the natural shares are not balanced ...
    assert not all(
        np.array_equal(a, b) for a, b in zip(labels["natural"], labels["training"], strict=True)
    )  # ... so the two sources differ


def test_training_step_is_traced_once():
    """The optimizer's and metrics' variables exist before `fit`, so the training step (the
    costly graph of a large network) is traced once, not again after creating them; the
    history is the same as without."""
    x = np.random.default_rng(3).random((16, 32, 32, 3), dtype=np.float32)
    y = np.array([0, 1] * 8, np.int32)
    histories, traces = {}, {}
    for prepared in (False, True):
        keras.utils.set_random_seed(3)
        model = build_model("vgg16", (32, 32, 3))
        compile_model(model, TINY)
        if prepared:
            build_training_state(model, (32, 32, 3))
            assert model.optimizer.built
        traces[prepared] = count_traces(model, "train_step")
        history = model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
        histories[prepared] = history.history
    assert traces[True]["n"] == 1 < traces[False]["n"]
    for key in ("loss", "accuracy"):
        np.testing.assert_allclose(histories[True][key], histories[False][key], rtol=1e-5)


def test_predictions_trace_the_forward_graph_once(mini_datasets, training_data, tmp_path):
    """Every image of the validation split is predicted once, in batches of one shape (the
    short last batch padded), with the probabilities of an unpadded prediction."""
    keras.utils.set_random_seed(5)
    model = build_model("vgg16", (32, 32, 3))
    paths = paths_for(mini_datasets, training_data, tmp_path)
    pipeline_settings = PipelineSettings(eval_batch_size=7)
    traces = count_traces(model, "predict_step")
    rows = predict_splits(model, "original", "vgg16", paths, TINY, pipeline_settings)
    assert traces["n"] == 1
    manifest = pd.read_csv(mini_datasets / "datasets" / "original" / "manifest.tsv", sep="\t")
    expected = manifest[(manifest.patient_id == "SYN0001") & manifest.label.isin(CLASSES)]
    assert len(expected) % 7 != 0  # a short last batch to pad
    assert [r["path"] for r in rows] == expected.path.tolist()
    assert {r["split"] for r in rows} == {"validation"}
    images = np.stack(
        [
            keras.ops.convert_to_numpy(image)
            for batch, _ in build_pipeline(
                split_table(paths.dataset_root, paths.splits, "validation"),
                pipeline_settings,
                training=False,
                seed=0,
                image_size=32,
            ).dataset
            for image in batch
        ]
    )
    np.testing.assert_allclose(
        [float(r["probability"]) for r in rows],
        model.predict(images, verbose=0)[:, 1],
        atol=2e-6,
    )


@pytest.mark.slow
def test_training_writes_a_model_that_loads_and_predicts(mini_datasets, training_data, tmp_path):
    out = tmp_path / "vgg16"
    row = train(mini_datasets, training_data, out)
    assert list(row) == list(SUMMARY_COLUMNS)
    assert row["epochs_run"] == 2 and row["train_images_per_s"] > 0
    assert row["mixed_precision"] is False  # never on a CPU
    history = pd.read_csv(out / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history.columns)
    assert row["best_val_loss"] == pytest.approx(history["val_loss"].min(), rel=1e-5)
    assert not (out / "backup").exists()

    model = keras.saving.load_model(out / "model.keras")
    probabilities = model.predict(np.zeros((3, 32, 32, 3), np.float32), verbose=0)
    assert probabilities.shape == (3, 2)
    assert read_preprocessing(out / "model.keras") == {
        "dataset": "original",
        "model": "vgg16",
        "image_size": 32,
        "channels": 3,
        "datasets": DATASETS_CONFIG,
        "resize": "area",
        "cacflow_version": "0.1.0",
    }
    # Every validation image of SYN0001 is predicted (no test patients in this split table).
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert list(predictions.columns) == list(PREDICTION_COLUMNS)
    manifest = pd.read_csv(mini_datasets / "datasets" / "original" / "manifest.tsv", sep="\t")
    assert len(predictions) == (manifest["patient_id"] == "SYN0001").sum()
    assert set(predictions["split"]) == {"validation"}
    assert predictions["probability"].between(0, 1).all()

    # An earlier run's model.keras starts a new training: its weights are loaded.
    continued = replace(TINY, epochs=1, weights=str(out / "model.keras"))
    row2 = train(mini_datasets, training_data, tmp_path / "continued", continued)
    assert row2["weights"] == "file:model.keras"
    first = keras.saving.load_model(tmp_path / "continued" / "model.keras")
    assert first.count_params() == model.count_params()


@pytest.mark.slow
def test_same_seed_same_history_on_cpu(mini_datasets, training_data, tmp_path):
    train(mini_datasets, training_data, tmp_path / "a")
    train(mini_datasets, training_data, tmp_path / "b")
    a = pd.read_csv(tmp_path / "a" / "history.csv")
    b = pd.read_csv(tmp_path / "b" / "history.csv")
    pd.testing.assert_frame_equal(a, b)
    pa = pd.read_csv(tmp_path / "a" / "predictions.tsv", sep="\t")
    pb = pd.read_csv(tmp_path / "b" / "predictions.tsv", sep="\t")
    pd.testing.assert_frame_equal(pa, pb)


RESUME_SCRIPT = """
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_training import train, TINY
from dataclasses import replace
train(Path({data!r}), Path({splits!r}), Path({out!r}), replace(TINY, epochs=4))
"""


@pytest.mark.slow
def test_killed_training_resumes_from_its_last_epoch(mini_datasets, training_data, tmp_path):
    out = tmp_path / "run"
    script = RESUME_SCRIPT.format(
        tests=str(Path(__file__).parent), data=str(mini_datasets), splits=str(training_data),
        out=str(out),
    )  # fmt: skip
    history = out / "history.csv"

    def epochs_done() -> int:
        return max(0, len(history.read_text().splitlines()) - 1) if history.exists() else 0

    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.monotonic() + 600
    while epochs_done() < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "training ended before it could be killed"
    time.sleep(0.5)  # let the backup of the epoch land, as a real kill would not wait either
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_after = epochs_done()
    assert 2 <= killed_after < 4
    assert not (out / "model.keras").exists()
    assert (out / "backup").is_dir()

    subprocess.run([sys.executable, "-c", script], check=True)
    epochs = list(pd.read_csv(history)["epoch"])
    assert epochs == [0, 1, 2, 3]
    assert keras.saving.load_model(out / "model.keras").output_shape == (None, 2)


# A short training as the CPU presets run it: balanced batches, Adam, BatchNormalization
# statistics recomputed before each validation. Measured: validation AUC 0.73 (seed 7);
# without these (SGD, class weights, Keras' moving averages) every image gets the same
# probability, AUC 0.5.
LEARNING = TrainSettings(
    models=("resnet50",),
    image_size=64,
    epochs=2,
    steps_per_epoch=20,
    validation_images=32,
    early_stopping_patience=0,
    optimizer="adam",
    batchnorm_batches=8,
)
LEARNING_MIN_AUC = 0.65  # chance is 0.5


@pytest.mark.slow
def test_short_training_detects_calcium_in_patients_it_never_saw(learning_datasets, tmp_path):
    """ResNet50 from scratch, 40 steps of 8 tiles on three calcium patients, then every
    cropped tile of two other patients (18 calcium tiles of 675): better than chance, and
    inference normalizes with the recomputed BatchNormalization statistics."""
    out = tmp_path / "resnet50"
    pipeline_settings = PipelineSettings(balanced_batches=True)
    paths = TrainPaths(
        dataset_root=learning_datasets / "datasets" / "cropped",
        splits=learning_datasets / "splits.tsv",
        augmented_root=None,
        out_dir=out,
        predictions=out / "predictions.tsv",
    )
    train_classifier(
        "cropped", "resnet50", paths, LEARNING, pipeline_settings, None, DATASETS_CONFIG, 7
    )
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t")
    assert set(predictions["patient_id"]) == {"SYN0003", "SYN0008"}
    calcium = predictions["label"] == "calcium"
    assert calcium.sum() >= 10
    auc = roc_auc_score(calcium, predictions["probability"])
    assert auc >= LEARNING_MIN_AUC, f"validation AUC {auc:.3f}"
    assert predictions["probability"].nunique() > 100  # not one answer for every tile

    # The saved model's statistics are the recomputed ones: recomputing them again over the
    # same batches with its own weights changes nothing (Keras' moving averages would be).
    model = keras.saving.load_model(out / "model.keras")
    layers = batchnorm_layers(model)
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers]
    table = split_table(paths.dataset_root, paths.splits, "train")
    batches = statistics_batches(table, LEARNING, pipeline_settings, 7)
    assert recompute_batchnorm_statistics(model, batches) == LEARNING.batchnorm_batches
    for layer, (mean, variance) in zip(layers, saved, strict=True):
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-4, atol=1e-5)


def test_cpu_preset_plans_every_pair_and_the_demo_the_cropped_tiles(
    tmp_path, run_snakemake, repo_root
):
    """config/cpu.yaml overlays config.yaml with settings the schema accepts and trains the
    twelve (dataset, network) pairs; the demo trains two networks on the cropped tiles."""

    def trainings(*args) -> set[str]:
        proc = run_snakemake(tmp_path, "--dry-run", "--quiet", "rules", *args)
        lines = (proc.stdout + proc.stderr).splitlines()
        return {line.split()[1] for line in lines if line.startswith("train_model ")}

    cpu = repo_root / "config" / "cpu.yaml"
    demo = repo_root / "config.yaml"
    assert trainings("--configfile", str(demo), str(cpu)) == {"12"}
    assert trainings("--configfile", str(demo)) == {"2"}


def test_per_model_keys_change_that_network_only():
    section = {"learning_rate": 0.001, "per_model": {"vgg16": {"learning_rate": 0.0001}}}
    assert TrainSettings.from_config(section, "vgg16").learning_rate == 0.0001
    assert TrainSettings.from_config(section, "resnet50").learning_rate == 0.001
    with pytest.raises(TrainingError, match=r"per_model\.vgg16.*'models'"):
        TrainSettings.from_config({"per_model": {"vgg16": {"models": ["vgg19"]}}}, "vgg16")


def test_a_later_config_file_overrides_an_earlier_files_per_network_key():
    defaults = {"steps_per_epoch": 64, "per_model": {"resnet50": {"steps_per_epoch": 128}}}
    merged = {"resnet50": {"steps_per_epoch": 128}, "vgg16": {"learning_rate": 0.0001}}
    cpu = {"per_model": {"vgg16": {"learning_rate": 0.0001}}}
    # config/cpu_cropped.yaml on top of config/cpu.yaml: 256 for every network.
    assert per_model_after_overlays(merged, [defaults, cpu, {"steps_per_epoch": 256}]) == {
        "vgg16": {"learning_rate": 0.0001}
    }
    # Without it the per-network value stays; in one file the network's own key wins.
    assert per_model_after_overlays(merged, [defaults, cpu]) == merged
    both = {"steps_per_epoch": 32, "per_model": {"resnet50": {"steps_per_epoch": 128}}}
    assert per_model_after_overlays(merged, [defaults, both]) == merged
    # A later file's learning rate for all reaches VGG16 too; a key no file names stays.
    later = per_model_after_overlays(merged, [defaults, cpu, {"learning_rate": 0.01}])
    assert later == {"resnet50": {"steps_per_epoch": 128}}
    assert per_model_after_overlays({"vgg19": {"dropout": 0.2}}, [defaults]) == {
        "vgg19": {"dropout": 0.2}
    }


def test_unknown_per_model_key_is_refused_before_any_job(refused_overlay):
    out = refused_overlay("training:\n  per_model:\n    vgg16: {learning_rat: 0.0001}\n")
    assert "training.per_model.vgg16: ['learning_rat']" in out
