"""CNN classifiers of Lee et al. 2021 (Sensors 21, 7059): keras.applications backbones with a
two-class head.

`build_model(name, input_shape, n_classes, weights, dropout)` builds, for every network of
`REGISTRY`:

    grey-levels in [0, 1]  ->  the backbone's own input scaling (layers, saved with the model)
    ->  backbone (include_top=False; its layers are part of this model's graph, so Grad-CAM
        reaches the last convolution)  ->  GlobalAveragePooling2D "pool"  ->  Dropout
    ->  Dense(n_classes, softmax, float32) "predictions"

The head's float32 output keeps mixed precision numerically safe. The paper's Table 1
parameter counts do not match the standard networks (e.g. ResNet50 23.5 M without the
ImageNet top); `count_parameters` reports what this code builds.

Weights: ``none`` (random, seeded), ``imagenet`` (downloaded by Keras: needs the internet;
offline, point ``weights`` at the file instead) or a local file: either the backbone's
weights as Keras publishes them (``*_notop.h5``), or the ``model.keras`` (or a
``.weights.h5``) of an earlier cacflow run of the same network, to continue from it.

Adding a network is one line in `REGISTRY`: its constructor, its smallest input side and
how it expects its inputs scaled (``keras.applications.<net>.preprocess_input`` modes).
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np


class ModelError(ValueError):
    """An unknown network, an input too small for it, or weights that cannot be loaded."""


@dataclass(frozen=True)
class Network:
    constructor: Any
    min_size: int
    # Input scaling the backbone was trained with: "caffe" (ImageNet mean subtracted from
    # 0-255 values), "tf" ([-1, 1]), "raw" (0-255; the network rescales itself).
    scaling: str


A = keras.applications
REGISTRY: dict[str, Network] = {
    "resnet50": Network(A.ResNet50, 32, "caffe"),
    "inception_resnet_v2": Network(A.InceptionResNetV2, 75, "tf"),
    "vgg16": Network(A.VGG16, 32, "caffe"),
    "vgg19": Network(A.VGG19, 32, "caffe"),
    "efficientnetb0": Network(A.EfficientNetB0, 32, "raw"),
}
# ImageNet channel means (BGR order): a grey image's equal channels, or a slab's slices
# above, at and below, each shifted by one fixed mean (datasets.slab).
_CAFFE_MEAN = np.array([103.939, 116.779, 123.68], dtype="float32")


def network(name: str) -> Network:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {sorted(REGISTRY)}") from None


def _input_scaling(scaling: str, channels: int) -> list[keras.layers.Layer]:
    """Layers mapping [0, 1] grey levels to what the backbone expects."""
    if scaling == "tf":
        return [keras.layers.Rescaling(2.0, offset=-1.0, name="scale_input")]
    if scaling == "raw":
        return [keras.layers.Rescaling(255.0, name="scale_input")]
    mean = np.resize(_CAFFE_MEAN / 255.0, channels)
    variance = np.full(channels, (1.0 / 255.0) ** 2, dtype="float32")
    return [keras.layers.Normalization(mean=mean, variance=variance, name="scale_input")]


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    n_classes: int = 2,
    weights: str | Path | None = None,
    dropout: float = 0.5,
    batchnorm_momentum: float | None = None,
) -> keras.Model:
    """The classifier `name` for images of `input_shape` (height, width, channels).
    `batchnorm_momentum` replaces the momentum of the moving statistics of every
    BatchNormalization layer (None: the network's own, Keras' 0.99)."""
    net = network(name)
    height, width, channels = input_shape
    if min(height, width) < net.min_size:
        raise ModelError(
            f"{name} needs inputs of at least {net.min_size} px, got {height}x{width} "
            "(training.image_size)"
        )
    mode = weights_mode(weights)
    if mode == "imagenet" and channels != 3:
        raise ModelError(f"ImageNet weights need 3 input channels, got {channels}")
    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    for layer in _input_scaling(net.scaling, channels):
        x = layer(x)
    backbone_weights = "imagenet" if mode == "imagenet" else None
    try:
        backbone = net.constructor(include_top=False, weights=backbone_weights, input_tensor=x)
    except Exception as error:  # download refused offline, wrong hash, ...
        raise ModelError(
            f"{name}: ImageNet weights could not be obtained ({error}); Keras downloads them "
            "from the internet: where there is none, download the *_notop.h5 file elsewhere "
            "and set training.weights to its path"
        ) from error
    x = keras.layers.GlobalAveragePooling2D(name="pool")(backbone.output)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        n_classes, activation="softmax", dtype="float32", name="predictions"
    )(x)
    model = keras.Model(inputs, outputs, name=name)
    if batchnorm_momentum is not None:
        for layer in batchnorm_layers(model):
            layer.momentum = float(batchnorm_momentum)
    if mode == "file":
        load_weights_file(model, backbone, Path(weights))
    return model


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNormalization layers of `model`, the backbone's included (none in VGG)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        elif isinstance(layer, keras.Model):  # a nested backbone
            found += batchnorm_layers(layer)
    return found


def weights_mode(weights: str | Path | None) -> str:
    """'none', 'imagenet' or 'file'."""
    if weights is None or str(weights).lower() in ("", "none", "null"):
        return "none"
    if str(weights).lower() == "imagenet":
        return "imagenet"
    return "file"


def load_weights_file(model: keras.Model, backbone: keras.Model, path: Path) -> str:
    """Load `path` into the whole model (an earlier run's model.keras or .weights.h5) or,
    failing that, into the backbone (Keras' published *_notop.h5). Returns which took it."""
    if not path.is_file():
        raise ModelError(f"training.weights: file not found: {path}")
    errors = []
    for target, what in ((model, "model"), (backbone, "backbone")):
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                target.load_weights(path)
            # Keras warns, not fails, when layers of the file are missing: refuse that too.
            partial = [str(w.message) for w in caught if "freshly-initialized" in str(w.message)]
            if partial:
                raise ValueError(partial[0])
            return what
        except (ValueError, KeyError, OSError, TypeError) as error:  # mismatch: next reading
            errors.append(f"as {what} weights: {str(error).splitlines()[0][:200]}")
    raise ModelError(
        f"training.weights: {path} fits neither the {model.name} model nor its backbone at "
        f"input {model.input_shape[1:]}: " + "; ".join(errors)
    )


def count_parameters(model: keras.Model) -> dict[str, int]:
    """Total, trainable and non-trainable weights of `model`, as built."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    frozen = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {
        "parameters": trainable + frozen,
        "trainable_parameters": trainable,
        "non_trainable_parameters": frozen,
    }
