"""Checks of a heat map: does it show what the network learned, or only where the image is
bright?

The pointing share (the heat within 5 mm of a lesion, `cacflow.learning.pointing`) rewards any
map concentrated on calcium, and calcium is the brightest thing in a tile. Each map is
therefore scored twice: from the trained network, and from a copy whose layers after the
map's layer are re-initialised at random (the model-randomisation test of Adebayo et al.,
"Sanity checks for saliency maps", NeurIPS 2018). The gap between the two is what the
trained weights add.

Two maps are checked: the Grad-CAM or LayerCAM map of the layer (`gradcam.grad_cam`), and
Guided Grad-CAM (Selvaraju et al. 2017), that map times guided backpropagation
(Springenberg et al. 2015): the gradient of the class's log-odds (`class_log_odds`) with
respect to the input, passed back through each ReLU only where both its input and the
gradient are positive. It has the input's resolution, where the layer's map has a cell per
few mm.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from cacflow.learning.gradcam import (
    GradCamError,
    class_log_odds,
    class_score_model,
    grad_cam,
)

GUIDED_PREFIX = "guided_"  # the method name of the Guided Grad-CAM rows


@tf.custom_gradient
def _guided_relu(x):
    def gradient(upstream):
        return upstream * tf.cast(upstream > 0, upstream.dtype) * tf.cast(x > 0, upstream.dtype)

    return tf.nn.relu(x), gradient


def network_copy(
    model: keras.Model, guided: bool = False, random_above: str | None = None
) -> keras.Model:
    """A copy of `model`: its ReLU activations guided (`guided`), and with `random_above`
    every layer after that one keeps the fresh random initialisation of its clone (seeded by
    `keras.utils.set_random_seed`); the others carry the trained weights."""
    replaced = []

    def clone_layer(layer):
        new = layer.__class__.from_config(layer.get_config())
        if guided and getattr(new, "activation", None) is keras.activations.relu:
            new.activation = _guided_relu
            replaced.append(new.name)
        return new

    copy = keras.models.clone_model(model, clone_function=clone_layer)
    if guided and not replaced:
        raise GradCamError(f"{model.name}: no ReLU activation to guide")
    names = [layer.name for layer in model.layers]
    if random_above is not None and random_above not in names:
        raise GradCamError(f"model {model.name!r} has no layer {random_above!r}")
    last_trained = names.index(random_above) if random_above else len(names) - 1
    for name in names[: last_trained + 1]:
        weights = model.get_layer(name).get_weights()
        if weights:  # the input layer is renamed by the clone, and has none
            copy.get_layer(name).set_weights(weights)
    return copy


def guided_backprop(guided: keras.Model, images: np.ndarray, class_index: int = 1) -> np.ndarray:
    """Positive guided-backpropagation maps (n, h, w) in [0, 1] of the class's log-odds, for a
    `network_copy(..., guided=True)`; the input's channels are summed, as the chain rule
    does for a grey image repeated."""
    score_model, softmax_dense = class_score_model(guided, guided.layers[-1].name)
    maps = []
    for start in range(0, len(images), 16):
        batch = tf.convert_to_tensor(np.asarray(images[start : start + 16], np.float32))
        with tf.GradientTape() as tape:
            tape.watch(batch)
            _, scores = score_model(batch, training=False)
            log_odds = class_log_odds(scores, guided.layers[-1], softmax_dense, class_index)
        maps.append(tf.nn.relu(tf.reduce_sum(tape.gradient(log_odds, batch), axis=-1)).numpy())
    return normalised(np.concatenate(maps))


def normalised(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its maximum (all zeros stay zeros)."""
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)


class CheckedMap(NamedTuple):
    """The maps of one method, from the trained network and from the randomised copy."""

    method: str
    trained: np.ndarray
    randomised: np.ndarray


def checked_maps(
    model: keras.Model, images: np.ndarray, layer: str, method: str
) -> list[CheckedMap]:
    """The `method` map of `layer` and its Guided Grad-CAM, each beside the same map of the
    network re-initialised above `layer`."""
    random_top = network_copy(model, random_above=layer)
    cam = grad_cam(model, images, layer_name=layer, method=method)
    cam_random = grad_cam(random_top, images, layer_name=layer, method=method)
    backprop = guided_backprop(network_copy(model, guided=True), images)
    backprop_random = guided_backprop(network_copy(model, guided=True, random_above=layer), images)
    return [
        CheckedMap(method, cam, cam_random),
        CheckedMap(
            GUIDED_PREFIX + method,
            normalised(backprop * cam),
            normalised(backprop_random * cam_random),
        ),
    ]
