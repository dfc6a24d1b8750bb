"""Do the heat maps show what the network learned, or only where the image is bright?

The pointing share (the heat within 5 mm of a lesion, `cacflow.learning.gradcam`) rewards any
map that is concentrated on calcium, and calcium is the brightest thing in a tile. So this
benchmark scores, on the true-positive calcium images of a finished run's tuning patients:

- the report's map (`evaluation.gradcam_method` at the layer `gradcam_min_cells` picks);
- guided backpropagation (Springenberg et al. 2015) and Guided Grad-CAM, its product with
  that map (Selvaraju et al. 2017), the sharper maps of the Grad-CAM paper;
- each of them again after the network above the map's layer is re-initialised at random
  (the model-randomisation test of Adebayo et al., "Sanity checks for saliency maps",
  NeurIPS 2018): a map that shows what the network learned changes; the rank correlation
  between the two maps says how much;
- the image alone (brightness above the middle of the window), which needs no network.

    .venv/bin/python benchmarks/gradcam_sanity.py --workdir W [--dataset cropped]
        [--models resnet50 ...] [--splits validation test] [--method layercam]
        [--min-cells 16] [--record]

W is a Snakemake working directory with results/models/<dataset>/<model>/ and the dataset's
manifest. The map's method and layer are the repository's config.yaml settings unless
`--method` and `--min-cells` say otherwise.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import time

import keras
import numpy as np
import tensorflow as tf
import yaml
from _common import (
    REPO_ROOT,
    add_run_arguments,
    append_section,
    run_images_details,
    trained_networks,
)
from scipy import stats

from cacflow.learning.gradcam import (
    POINTING_RADIUS_MM,
    _score_model,
    class_logits,
    grad_cam,
    gradcam_layer_name,
    heat_near_lesions,
    map_cells,
    true_positive_tiles,
)
from cacflow.learning.model_file import read_preprocessing
from cacflow.tables import read_tsv


@tf.custom_gradient
def _guided_relu(x):
    """ReLU whose gradient passes only where both the input and the gradient are positive."""

    def gradient(upstream):
        return upstream * tf.cast(upstream > 0, upstream.dtype) * tf.cast(x > 0, upstream.dtype)

    return tf.nn.relu(x), gradient


def _clone(model: keras.Model, guided: bool, keep_up_to: str | None) -> keras.Model:
    """A copy of `model`, its ReLUs guided or not; with `keep_up_to`, the trained weights are
    kept up to that layer and every layer after it keeps its fresh random initialisation."""
    replaced = []

    def clone_layer(layer):
        new = layer.__class__.from_config(layer.get_config())
        if guided and getattr(new, "activation", None) is keras.activations.relu:
            new.activation = _guided_relu
            replaced.append(new.name)
        return new

    copy = keras.models.clone_model(model, clone_function=clone_layer)
    if guided and not replaced:
        raise SystemExit(f"{model.name}: no ReLU activation to guide")
    names = [layer.name for layer in model.layers]
    last_kept = names.index(keep_up_to) if keep_up_to else len(names) - 1
    for name in names[: last_kept + 1]:
        copy.get_layer(name).set_weights(model.get_layer(name).get_weights())
    return copy


def guided_backprop(model: keras.Model, images: np.ndarray, class_index: int = 1) -> np.ndarray:
    """Positive guided-backpropagation maps (n, h, w) in [0, 1] of the class's logit, for a
    model with guided ReLUs; the channels of the (grey, repeated) input are summed, as the
    chain rule does."""
    score_model, softmax_dense = _score_model(model, model.layers[-1].name)
    maps = []
    for start in range(0, len(images), 16):
        batch = tf.convert_to_tensor(images[start : start + 16])
        with tf.GradientTape() as tape:
            tape.watch(batch)
            _, scores = score_model(batch, training=False)
            logit = class_logits(scores, model.layers[-1], softmax_dense)[:, class_index]
        maps.append(tf.nn.relu(tf.reduce_sum(tape.gradient(logit, batch), axis=-1)).numpy())
    return _normalised(np.concatenate(maps))


def _normalised(maps: np.ndarray) -> np.ndarray:
    peak = maps.max(axis=(1, 2), keepdims=True)
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0).astype(np.float32)


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    values = [stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)]
    return float(np.nanmean(values))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--method", help="default: evaluation.gradcam_method of config.yaml")
    parser.add_argument("--min-cells", type=int, help="default: evaluation.gradcam_min_cells")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)  # the re-initialised layers, the same at every run

    evaluation = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())["evaluation"]
    method = args.method or evaluation["gradcam_method"]
    min_cells = args.min_cells or int(evaluation["gradcam_min_cells"])
    root, manifest, folders = trained_networks(args)
    lines = [
        "| network | map | layer | images | heat within 5 mm, trained | above the layer random | rank correlation, trained vs random |",
        "|---|---|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    start = time.perf_counter()
    for folder in folders:
        prep = read_preprocessing(folder / "model.keras")
        model = keras.saving.load_model(folder / "model.keras")
        predictions = [r for r in read_tsv(folder / "predictions.tsv") if r["split"] in args.splits]
        images, lesions, pixel_mm = true_positive_tiles(
            predictions, manifest, root, prep["image_size"], prep["channels"], resize=prep["resize"]
        )
        if not len(images):
            print(f"{folder.name}: no true-positive calcium image with a lesion mask")
            continue
        layer = gradcam_layer_name(model, min_cells)
        random_top = _clone(model, guided=False, keep_up_to=layer)
        guided = _clone(model, guided=True, keep_up_to=None)
        guided_random_top = _clone(model, guided=True, keep_up_to=layer)
        cam = grad_cam(model, images, layer_name=layer, method=method)
        cam_random = grad_cam(random_top, images, layer_name=layer, method=method)
        backprop = guided_backprop(guided, images)
        backprop_random = guided_backprop(guided_random_top, images)
        brightness = _normalised(np.clip(images[..., 0] - 0.5, 0.0, None))
        maps = {
            method: (cam, cam_random),
            "guided backpropagation": (backprop, backprop_random),
            f"Guided Grad-CAM (guided backpropagation x {method})": (
                _normalised(backprop * cam),
                _normalised(backprop_random * cam_random),
            ),
            "image brightness (no network)": (brightness, brightness),
        }
        for name, (trained, randomised) in maps.items():
            shares = [
                heat_near_lesions(m, lesions, pixel_mm, POINTING_RADIUS_MM).shares
                for m in (trained, randomised)
            ]
            share = [np.nanmean(x) for x in shares]
            scored = int(np.sum(~np.isnan(shares[0])))
            line = (
                f"| {folder.name} | {name} | {layer} ({map_cells(model, layer)}) | {scored} | "
                f"{share[0]:.3f} | {share[1]:.3f} | {_rank_correlation(trained, randomised):.2f} |"
            )
            print(line, flush=True)
            lines.append(line)
    table = "\n".join(lines)
    if args.record:
        details = (
            f"{run_images_details(args)}; the report's map: "
            f"{method} at the deepest layer of at least {min_cells} cells; 'above the layer "
            f"random': every layer after the map's layer re-initialised (Adebayo et al. 2018); "
            f"{time.perf_counter() - start:.0f} s"
        )
        append_section("gradcam_sanity", details, table)


if __name__ == "__main__":
    main()
