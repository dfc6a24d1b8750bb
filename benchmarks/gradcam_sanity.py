"""Do the heat maps show what the network learned, or only where the image is bright?

The pointing share (the heat within 5 mm of a lesion, `cacflow.learning.pointing`) rewards any
map that is concentrated on calcium, and calcium is the brightest thing in a tile. So this
benchmark scores, on the true-positive calcium images of a finished run's tuning patients
(or of its external cohort, `--external`), the maps the report checks
(`cacflow.learning.map_checks`): the report's map
(`evaluation.gradcam_method` at the layer `gradcam_min_cells` picks) and its Guided
Grad-CAM, each from the trained network and from the network re-initialised above the map's
layer, with the rank correlation between the two; the report's map squared, a control of how
much the share owes to the map's contrast rather than to where its heat lies (the peak stays
where it was); and the image alone (brightness above the middle of the window), which needs
no network.

    .venv/bin/python benchmarks/gradcam_sanity.py --workdir W [--dataset cropped]
        [--models resnet50 ...] [--splits validation test] [--method layercam]
        [--min-cells 16] [--external] [--record]

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
import yaml
from _common import (
    REPO_ROOT,
    add_run_arguments,
    append_section,
    loaded_networks,
    run_images_details,
    trained_networks,
)
from scipy import stats

from cacflow.imaging.png import slice_grey
from cacflow.learning.gradcam import gradcam_layer_name, map_cells
from cacflow.learning.map_checks import checked_maps, normalised
from cacflow.learning.pointing import POINTING_RADIUS_MM, heat_near_lesions, true_positive_tiles


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
        "| network | map | layer | images | heat within 5 mm, trained | above the layer random | peak within 5 mm, trained | rank correlation, trained vs random |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    start = time.perf_counter()
    for folder, prep, model, predictions in loaded_networks(args, folders):
        images, lesions, pixel_mm = true_positive_tiles(
            predictions, manifest, root, prep["image_size"], prep["channels"], resize=prep["resize"]
        )
        if not len(images):
            print(f"{folder.name}: no true-positive calcium image with a lesion mask")
            continue
        layer = gradcam_layer_name(model, min_cells)
        brightness = normalised(np.clip(slice_grey(images) - 0.5, 0.0, None))
        maps = {
            checked.method: (checked.trained, checked.randomised)
            for checked in checked_maps(model, images, layer, method)
        }
        # The share is not invariant to the map's contrast: squaring the same map moves
        # heat from its faint spread to its peak, which the share rewards (the peak column
        # shows where each map's maximum lies).
        trained, randomised = maps[method]
        maps[f"{method} squared (contrast control)"] = (trained**2, randomised**2)
        maps["image brightness (no network)"] = (brightness, brightness)
        for name, (trained, randomised) in maps.items():
            pointing = [
                heat_near_lesions(m, lesions, pixel_mm, POINTING_RADIUS_MM)
                for m in (trained, randomised)
            ]
            share = [np.nanmean(x.shares) for x in pointing]
            scored = int(np.sum(~np.isnan(pointing[0].shares)))
            line = (
                f"| {folder.name} | {name} | {layer} ({map_cells(model, layer)}) | {scored} | "
                f"{share[0]:.3f} | {share[1]:.3f} | {np.nanmean(pointing[0].hits):.3f} | "
                f"{_rank_correlation(trained, randomised):.2f} |"
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
