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
no network. A second table says where the rest of the trained network's map lies: each map's
heat, and the tile's area, split into regions taken in turn, each less those before it:
within 5 mm of a lesion, within 2 mm of other calcium-bright pixels (130 HU and more in the
model's window), the black outside the heart mask, within 3 mm inside the mask's edge, and
the rest of the heart (heart-segmented images only).

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
from scipy import ndimage, stats

from cacflow.imaging.png import slice_grey
from cacflow.imaging.windowing import window_to_uint8
from cacflow.learning.gradcam import gradcam_layer_name, map_cells
from cacflow.learning.map_checks import checked_maps, normalised
from cacflow.learning.model_file import model_dataset_settings
from cacflow.learning.pointing import (
    POINTING_RADIUS_MM,
    heat_at,
    heat_near_lesions,
    true_positive_tiles,
)
from cacflow.scoring.agatston import THRESHOLD_HU

REGIONS = (
    f"within {POINTING_RADIUS_MM:g} mm of a lesion",
    "within 2 mm of other calcium-bright pixels",
    "outside the heart mask (black)",
    "within 3 mm inside the mask's edge",
    "other heart tissue",
)


def _near(source: np.ndarray, mm: float, radius_mm: float) -> np.ndarray:
    """The pixels within `radius_mm` of any `source` pixel (none when there is no source)."""
    if not source.any():
        return np.zeros_like(source)
    return ndimage.distance_transform_edt(~source, sampling=mm) <= radius_mm


def heat_by_region(
    cams: np.ndarray,
    greys: np.ndarray,
    lesions: list[np.ndarray],
    pixel_mm: list[float],
    bright_grey: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per map, the share of its heat and of its tile's area in each of `REGIONS`, each
    region less the ones before it: two (n, len(REGIONS)) arrays, NaN rows for maps without
    heat. `greys` (n, h, w), the slices' grey levels in [0, 1] at the model's input, are
    enlarged to the lesion masks' size to find the black and the calcium-bright pixels
    (`bright_grey` on the 0-255 scale)."""
    heat_shares = np.full((len(cams), len(REGIONS)), np.nan)
    area_shares = np.full((len(cams), len(REGIONS)), np.nan)
    for i, (cam, grey, mask) in enumerate(zip(cams, greys, lesions, strict=True)):
        mask = np.asarray(mask, bool)
        heat = heat_at(cam, mask.shape)
        if heat.sum() <= 0 or not mask.any():
            continue
        zoom = (mask.shape[0] / grey.shape[0], mask.shape[1] / grey.shape[1])
        grey = ndimage.zoom(grey * 255.0, zoom, order=0)[: mask.shape[0], : mask.shape[1]]
        mm = float(pixel_mm[i])
        black = grey == 0
        regions = [
            _near(mask, mm, POINTING_RADIUS_MM),
            _near((grey >= bright_grey) & ~mask, mm, 2.0),
            black,
            _near(black, mm, 3.0),
            np.ones_like(mask),
        ]
        taken = np.zeros_like(mask)
        for j, region in enumerate(regions):
            region = region & ~taken
            heat_shares[i, j] = heat[region].sum() / heat.sum()
            area_shares[i, j] = region.mean()
            taken = taken | region
    return heat_shares, area_shares


def _region_row(
    name: str, prep: dict, cams: np.ndarray, images: np.ndarray, lesions, pixel_mm
) -> str:
    """The row of the where-the-heat-lies table: each region's mean share of the heat, and
    in brackets of the tile's area. The regions name the black of a heart-segmented image,
    so other images get none."""
    settings = model_dataset_settings(prep)
    if prep["dataset"] == "original" or settings.cropped_context != "heart":
        return f"| {name} | - | " + " | ".join("-" for _ in REGIONS) + " |"
    bright_grey = float(
        window_to_uint8(
            np.array([THRESHOLD_HU], float), settings.window_center_hu, settings.window_width_hu
        )[0]
    )
    heat, area = heat_by_region(cams, slice_grey(images), lesions, pixel_mm, bright_grey)
    scored = ~np.isnan(heat[:, 0])
    means = zip(heat[scored].mean(axis=0), area[scored].mean(axis=0), strict=True)
    return (
        f"| {name} | {int(scored.sum())} | "
        + " | ".join(f"{h:.3f} ({a:.3f})" for h, a in means)
        + " |"
    )


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
    regions = [
        f"| network | images | {' | '.join(REGIONS)} |",
        "|---|---:|" + "---:|" * len(REGIONS),
    ]
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
        trained, randomised = maps[method]
        regions.append(_region_row(folder.name, prep, trained, images, lesions, pixel_mm))
        # The share is not invariant to the map's contrast: squaring the same map moves
        # heat from its faint spread to its peak, which the share rewards (the peak column
        # shows where each map's maximum lies).
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
    where = (
        f"Where the heat of the trained network's {method} lies (mean share per map; each "
        "region less those left of it; in brackets its mean share of the tile's area):\n\n"
        + "\n".join(regions)
    )
    print(where)
    table = "\n".join(lines) + "\n\n" + where
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
