"""Grad-CAM heat maps of the calcium classifiers (Selvaraju et al., "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017).

For a class c and a convolutional layer with feature maps A^k, the map is
ReLU(sum_k alpha_k A^k) with alpha_k the spatial mean of d y^c / d A^k. Selvaraju et al. take
y^c, the class score before the softmax (the softmax probability saturates, and its gradient
vanishes, on confidently classified images). Here y^c is the class's log-odds before the
softmax, its score less the log-sum-exp of the others' (y_1 - y_0 for two classes): as
unsaturated, but free of what the scores share. A feature that raises every class's score
alike changes no prediction, so it gets no heat. LayerCAM (Jiang et al., "LayerCAM:
Exploring Hierarchical Class Activation Maps for Localization", IEEE TIP 2021) weights each
location by its own positive gradient instead, ReLU(sum_k ReLU(d y^c / d A^k_ij) A^k_ij), so a
feature counts only where it raises the score: sharper maps at the finer layers that show a
lesion of a few mm. Each map is resized bilinearly to
the input's height x width and divided by its maximum, so it lies in [0, 1] (all zeros where
no feature speaks for the class).

Assumptions: a Keras 3 functional model on the TensorFlow backend whose convolutional layers
are part of its own graph (a keras.applications backbone built with `input_tensor=inputs`),
ending in a Dense layer; when that layer has a softmax, its logits are recomputed from its
input and weights. Without a layer name, the deepest layer with a 4-D output before the
global pooling layer ("pool") whose map is at least `min_cells` cells across is used, pooling
layers excepted (`gradcam_layer_name`).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from cacflow.learning.inputs import model_resize
from cacflow.reporting.metrics import KINDS, outcome_kinds

POOL_LAYER = "pool"
CAM_METHODS = ("gradcam", "layercam")
_SKIPPED_LAYERS = (
    keras.layers.InputLayer,
    keras.layers.ZeroPadding2D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
)


class GradCamError(ValueError):
    """A model or layer Grad-CAM cannot use (no 4-D layer, unknown name, nested backbone)."""


def gradcam_layer_name(model: keras.Model, min_cells: int = 1) -> str:
    """The deepest layer with a 4-D output (batch, rows, cols, channels) before the layer
    named "pool" (or in the whole model when there is none) whose map has at least
    `min_cells` rows and columns; input, padding and pooling layers excepted (VGG's final
    max pooling would halve the map's resolution; Selvaraju et al. take VGG16's last
    convolution, block5_conv3). With `min_cells` 1 this is the last convolutional stage;
    at small inputs it is 1x1 to 3x3 cells, too coarse to show a lesion of a few mm, and a
    larger `min_cells` moves to a finer stage. When no layer is that fine, the finest."""
    layers = list(model.layers)
    names = [layer.name for layer in layers]
    if POOL_LAYER in names:
        layers = layers[: names.index(POOL_LAYER)]
    maps = [
        (layer.name, min(layer.output.shape[1:3]))
        for layer in layers
        if not isinstance(layer, _SKIPPED_LAYERS)
        and hasattr(getattr(layer, "output", None), "shape")
        and len(layer.output.shape) == 4
    ]
    if not maps:
        raise GradCamError(
            f"model {model.name!r} has no layer with a 4-D output before {POOL_LAYER!r}; "
            "a backbone nested as one layer must be built with input_tensor=inputs"
        )
    for name, cells in reversed(maps):
        if cells >= min_cells:
            return name
    return max(reversed(maps), key=lambda item: item[1])[0]


def map_cells(model: keras.Model, layer_name: str) -> str:
    """The map size of a layer, "rows x cols"."""
    rows, cols = model.get_layer(layer_name).output.shape[1:3]
    return f"{rows}x{cols}"


def class_score_model(model: keras.Model, layer_name: str) -> tuple[keras.Model, bool]:
    """A model from the input to (feature maps, class scores); the flag tells whether the
    scores are the input of a softmax Dense layer (logits still to be computed)."""
    try:
        features = model.get_layer(layer_name).output
    except ValueError as error:
        raise GradCamError(f"model {model.name!r} has no layer {layer_name!r}") from error
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    softmax_dense = isinstance(last, keras.layers.Dense) and activation in (
        keras.activations.softmax,
        tf.nn.softmax,
    )
    scores = last.input if softmax_dense else model.outputs[0]
    return keras.Model(model.inputs, [features, scores]), softmax_dense


def class_log_odds(scores, last: keras.layers.Layer, softmax_dense: bool, class_index: int):
    """The log-odds of `class_index` before the softmax, (n,) float32: its logit less the
    log-sum-exp of the other classes' (`class_logits`). A model with a single output has
    no other class: its score is taken as it is."""
    logits = class_logits(scores, last, softmax_dense)
    if logits.shape[-1] == 1:
        return logits[:, 0]
    index = class_index % logits.shape[-1]
    others = tf.concat([logits[:, :index], logits[:, index + 1 :]], axis=-1)
    return logits[:, index] - tf.reduce_logsumexp(others, axis=-1)


def class_logits(scores, last: keras.layers.Layer, softmax_dense: bool):
    """The class scores before the softmax (float32) from `class_score_model`'s scores: the
    logits of the softmax Dense layer `last` from its input, or the scores as they are."""
    scores = tf.cast(scores, tf.float32)
    if not softmax_dense:
        return scores
    scores = tf.matmul(scores, tf.cast(last.kernel, tf.float32))
    return scores + tf.cast(last.bias, tf.float32) if last.use_bias else scores


def grad_cam(
    model: keras.Model,
    images: ArrayLike,
    class_index: int = 1,
    layer_name: str | None = None,
    batch_size: int = 16,
    method: str = "gradcam",
) -> np.ndarray:
    """Heat maps (n, height, width) in [0, 1], float32, of `class_index` (1 = calcium) for
    `images` (n, height, width, channels), preprocessed as the model expects; `method` one
    of `CAM_METHODS`."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4:
        raise GradCamError(f"images must be (n, height, width, channels), got {images.shape}")
    if method not in CAM_METHODS:
        raise GradCamError(f"unknown method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    layer_name = layer_name or gradcam_layer_name(model)
    score_model, softmax_dense = class_score_model(model, layer_name)
    last = model.layers[-1]
    height, width = images.shape[1:3]
    maps = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start : start + batch_size])
        with tf.GradientTape() as tape:
            features, scores = score_model(batch, training=False)
            tape.watch(features)
            class_score = class_log_odds(scores, last, softmax_dense, class_index)
        gradients = tf.cast(tape.gradient(class_score, features), tf.float32)
        if method == "gradcam":
            weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        else:
            weights = tf.nn.relu(gradients)
        cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(features, tf.float32), axis=-1))
        cam = tf.image.resize(cam[..., None], (height, width), method="bilinear")[..., 0]
        maps.append(cam.numpy())
    cams = np.concatenate(maps) if maps else np.zeros((0, height, width), np.float32)
    peak = cams.max(axis=(1, 2), keepdims=True)
    cams = np.divide(cams, peak, out=np.zeros_like(cams), where=peak > 0)
    return np.clip(cams, 0.0, 1.0).astype(np.float32)


def select_examples(
    labels: ArrayLike,
    probabilities: ArrayLike,
    per_kind: int = 2,
    seed: int = 0,
    threshold: float = 0.5,
) -> dict[str, np.ndarray]:
    """Up to `per_kind` image indices of each kind (TP, FP, FN, TN), drawn at random without
    replacement (deterministic for a seed), in ascending order; fewer where a kind has fewer
    images."""
    kinds = outcome_kinds(labels, probabilities, threshold)
    rng = np.random.default_rng(seed)
    chosen = {}
    for kind in KINDS:
        candidates = np.flatnonzero(kinds == kind)
        take = min(per_kind, candidates.size)
        chosen[kind] = np.sort(rng.choice(candidates, size=take, replace=False))
    return chosen


def model_images(
    paths: list[Path], image_size: int, channels: int, resize: str = "area"
) -> np.ndarray:
    """PNG images as the model sees them: resized to `image_size` (`model_resize`), in
    [0, 1], a grey one repeated to `channels`; (n, image_size, image_size, channels) float32."""
    images = []
    for path in paths:
        stored = model_resize(tf.io.decode_png(tf.io.read_file(str(path))), image_size, resize)
        images.append(np.broadcast_to(stored.numpy() / 255.0, (image_size, image_size, channels)))
    if not images:
        return np.zeros((0, image_size, image_size, channels), np.float32)
    return np.stack(images).astype(np.float32)


def test_examples(
    model: keras.Model,
    predictions: list[dict],
    dataset_root: Path,
    image_size: int,
    channels: int,
    per_kind: int = 2,
    seed: int = 0,
    layer_name: str | None = None,
    method: str = "gradcam",
    resize: str = "area",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM (of `layer_name`) of up to `per_kind` test images of each outcome (TP, FP,
    FN, TN), from the rows of a training job's predictions.tsv: (images, maps, labels,
    probabilities), the images as the model saw them (resized, in [0, 1])."""
    test = [r for r in predictions if r["split"] == "test"]
    labels = np.array([r["label"] == "calcium" for r in test], dtype=int)
    probabilities = np.array([float(r["probability"]) for r in test])
    chosen = np.concatenate(list(select_examples(labels, probabilities, per_kind, seed).values()))
    chosen = chosen.astype(int)
    images = model_images(
        [Path(dataset_root) / test[i]["path"] for i in chosen], image_size, channels, resize
    )
    if not len(images):
        empty = np.zeros((0, image_size, image_size), np.float32)
        return empty, empty, labels[:0], probabilities[:0]
    maps = grad_cam(model, images, layer_name=layer_name, method=method)
    return images, maps, labels[chosen], probabilities[chosen]
