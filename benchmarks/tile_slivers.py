"""Which calcium tiles the networks miss, by how much lesion a tile shows: a finished run's
external cohort, tiles labelled with any lesion pixel (`datasets.min_tile_lesion_area_mm2: 0`),
scored as they are and with the slivers (less than 1 mm^2 of lesion in view, the Agatston
minimum) counted as no_calcium, the labels `datasets.min_tile_lesion_area_mm2: 1` gives.

    .venv/bin/python benchmarks/tile_slivers.py --workdir DIR [--dataset cropped]
        [--threshold 0.5] [--record]

The lesion area a tile shows is read from its lesion mask (``lesion_mask`` of the manifest,
at the image's ``pixel_mm``), as augmentation measures it. The predictions are the run's
own (results/external/predictions/): nothing is retrained, so the two rows of a network
differ by the labels alone.
"""

import argparse
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
from _common import append_section

from cacflow.learning.augment import read_grey
from cacflow.reporting.metrics import image_metrics
from cacflow.scoring.agatston import MIN_AREA_MM2
from cacflow.tables import read_tsv

BINS_MM2 = (0.0, 1.0, 2.0, 4.0, np.inf)


def shown_area_mm2(root: Path, row: dict) -> float:
    """The lesion area (mm^2) a calcium image shows, from its lesion mask."""
    n = np.count_nonzero(read_grey(root / row["lesion_mask"]) > 127)
    return int(n) * float(row["pixel_mm"]) ** 2


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dataset", default="cropped")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)

    external = args.workdir / "results" / "external"
    root = external / "datasets" / args.dataset
    manifest = {r["path"]: r for r in read_tsv(root / "manifest.tsv")}
    files = sorted((external / "predictions" / args.dataset).glob("*.tsv"))
    if not files:
        sys.exit(f"{external}: no predictions of an external cohort")
    area = {
        path: shown_area_mm2(root, row)
        for path, row in manifest.items()
        if row["label"] == "calcium" and row["lesion_mask"]
    }
    edges = [f"{lo:g}-{hi:g}" if np.isfinite(hi) else f">= {lo:g}" for lo, hi in pairwise(BINS_MM2)]
    by_area = [
        "| network | " + " | ".join(f"{e} mm^2: missed / tiles" for e in edges) + " |",
        "|---|" + "---:|" * len(edges),
    ]
    scores = [
        "| network | labels | calcium tiles | image AUC | balanced accuracy | sensitivity | specificity |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for path in files:
        rows = read_tsv(path)
        probability = np.array([float(r["probability"]) for r in rows])
        shown = np.array([area.get(r["path"], np.nan) for r in rows])
        calcium = np.array([r["label"] == "calcium" for r in rows])
        missed = calcium & (probability <= args.threshold)
        cells = []
        for lo, hi in pairwise(BINS_MM2):
            in_bin = calcium & (shown >= lo) & (shown < hi)
            cells.append(f"{int(np.sum(missed & in_bin))} / {int(np.sum(in_bin))}")
        by_area.append(f"| {path.stem} | " + " | ".join(cells) + " |")
        sliver = calcium & (shown < MIN_AREA_MM2)
        for name, labels in (("any lesion pixel", calcium), ("slivers no_calcium", calcium & ~sliver)):  # fmt: skip
            m = image_metrics(labels.astype(int), probability, args.threshold)
            scores.append(
                f"| {path.stem} | {name} | {int(labels.sum())} | {m['roc_auc']:.4f} | "
                f"{m['balanced_accuracy']:.3f} | {m['sensitivity']:.3f} | {m['specificity']:.3f} |"
            )
    table = "\n".join(by_area) + "\n\n" + "\n".join(scores)
    print(table)
    if args.record:
        details = (
            f"external cohort of {args.workdir} ({args.dataset}), threshold {args.threshold}; "
            "lesion area a calcium tile shows, from its lesion mask; second table: the same "
            "predictions with tiles showing less than 1 mm^2 counted as no_calcium"
        )
        append_section("tile_slivers", details, table)


if __name__ == "__main__":
    main()
