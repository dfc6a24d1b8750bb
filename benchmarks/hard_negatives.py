"""What the hard negatives of training show: of a finished synthetic run's no_calcium tiles,
how many show calcium candidates (manifest candidate_mm2 >= 1 mm^2, what
`cacflow.learning.inputs.hard_negatives` draws from) and how many show the phantom's
non-coronary calcium (aortic wall or valve, mitral annulus: the truth's
noncoronary_calcium map, inside the tile's box), per split.

    .venv/bin/python benchmarks/hard_negatives.py --workdir W [--dataset cropped] [--record]

W is a Snakemake working directory of the synthetic cohort (results/synthetic/truth,
results/splits/patients.tsv, results/datasets/<dataset>/manifest.tsv).
"""

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
from _common import append_section

from cacflow.learning.inputs import CLASSES
from cacflow.scoring.agatston import MIN_AREA_MM2
from cacflow.tables import read_tsv


def shows_noncoronary(truth_dir: Path, rows: list[dict]) -> list[bool]:
    """Per manifest row, whether its box holds a pixel of the truth's non-coronary calcium."""
    maps: dict[str, tuple[dict[int, int], np.ndarray]] = {}
    shown = []
    for row in rows:
        pid = row["patient_id"]
        if pid not in maps:
            with np.load(truth_dir / f"{pid}.npz") as data:
                index = {int(n): k for k, n in enumerate(data["instance_numbers"])}
                maps[pid] = (index, data["noncoronary_calcium"].astype(bool))
        index, calcium = maps[pid]
        r0, r1, c0, c1 = (int(row[key]) for key in ("row0", "row1", "col0", "col1"))
        box = calcium[index[int(row["slice"])], max(r0, 0) : r1, max(c0, 0) : c1]
        shown.append(bool(box.any()))
    return shown


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dataset", default="cropped")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    results = args.workdir / "results"
    split = {r["patient_id"]: r["split"] for r in read_tsv(results / "splits" / "patients.tsv")}
    negatives = [
        r
        for r in read_tsv(results / "datasets" / args.dataset / "manifest.tsv")
        if r["label"] == CLASSES[0]
    ]
    shown = shows_noncoronary(results / "synthetic" / "truth", negatives)
    counts = Counter()
    for row, noncoronary in zip(negatives, shown, strict=True):
        hard = float(row["candidate_mm2"] or 0.0) >= MIN_AREA_MM2
        counts[(split[row["patient_id"]], hard, noncoronary)] += 1
    lines = [
        "| split | no_calcium images | hard negatives | of them showing non-coronary calcium | other images showing it |",
        "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for name in ("train", "validation", "test"):
        total = sum(n for (where, _, _), n in counts.items() if where == name)
        hard, hard_shown = counts[(name, True, False)], counts[(name, True, True)]
        lines.append(
            f"| {name} | {total} | {hard + hard_shown} | {hard_shown} "
            f"| {counts[(name, False, True)]} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.record:
        details = (
            f"run {args.workdir}, {args.dataset} dataset; hard negative: a no_calcium image "
            f"with candidate_mm2 >= {MIN_AREA_MM2} (HU >= 130 in the heart mask, components of "
            "at least 1 mm^2); non-coronary calcium: a pixel of the phantom's "
            "noncoronary_calcium map inside the image's box"
        )
        append_section("hard_negatives", details, table)


if __name__ == "__main__":
    main()
