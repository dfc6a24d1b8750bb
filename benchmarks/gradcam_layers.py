"""Which Grad-CAM layer shows the calcium: the pointing game of a finished run's networks for
the deepest layer of each map size, on the true-positive calcium images of the training
cohort's validation and test patients (the patients `evaluation.gradcam_min_cells` and
`gradcam_method` are chosen on; the external cohort confirms it).

    .venv/bin/python benchmarks/gradcam_layers.py --workdir W [--dataset cropped]
        [--models resnet50 vgg16 ...] [--splits validation test]
        [--methods gradcam layercam] [--record]

W is a Snakemake working directory with results/models/<dataset>/<model>/ and the dataset's
manifest. Per network, map size and method (Grad-CAM, LayerCAM): the share of the heat
within 5 mm of a lesion (mean, median) and how often the map's peak lies there.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import time

import keras
from _common import (
    add_run_arguments,
    append_section,
    loaded_networks,
    run_images_details,
    trained_networks,
)

from cacflow.learning.gradcam import CAM_METHODS, gradcam_layer_name, map_cells
from cacflow.learning.pointing import POINTING_RADIUS_MM, pointing_game, pointing_row


def layers_by_size(model: keras.Model, input_size: int) -> list[str]:
    """The layer `gradcam_layer_name` takes for each distinct map size up to half the input
    (coarsest first): every stage a `min_cells` setting can reach."""
    names = {gradcam_layer_name(model, cells) for cells in range(1, input_size // 2 + 1)}
    return sorted(names, key=lambda name: int(map_cells(model, name).split("x")[0]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--methods", nargs="+", choices=CAM_METHODS, default=["gradcam"])
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)

    root, manifest, model_dirs = trained_networks(args)
    lines = [
        "| network | method | layer | map | true-positive images | heat within 5 mm, mean | median | peak within 5 mm |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    start = time.perf_counter()
    for folder, prep, model, predictions in loaded_networks(args, model_dirs):
        for method in args.methods:
            for layer in layers_by_size(model, prep["image_size"]):
                pointing = pointing_game(
                    model, predictions, manifest, root, prep["image_size"], prep["channels"],
                    layer_name=layer, method=method, resize=prep["resize"],
                )  # fmt: skip
                row = pointing_row(
                    args.dataset, folder.name, layer, map_cells(model, layer), pointing,
                    POINTING_RADIUS_MM, method,
                )  # fmt: skip
                line = (
                    f"| {folder.name} | {method} | {layer} | {row['map_cells']} | "
                    f"{row['n_images']} | {row['mean_share']:.3f} | "
                    f"{row['median_share']:.3f} | {row['peak_hit_rate']:.3f} |"
                )
                print(line, flush=True)
                lines.append(line)
    table = "\n".join(lines)
    if args.record:
        details = (
            f"{run_images_details(args)}; per map size the deepest layer of that size; "
            f"methods {', '.join(args.methods)}; {time.perf_counter() - start:.0f} s"
        )
        append_section("gradcam_layers", details, table)


if __name__ == "__main__":
    main()
