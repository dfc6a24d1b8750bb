"""Seconds per patient of `cacflow convert coca` and `cacflow convert orcascore`, on one core,
for synthetic cohorts written in each dataset's format at 512 px (`cacflow synth --format`),
with the round trip's agreement with the truth.

    .venv/bin/python benchmarks/convert_speed.py [--patients 4] [--seed 2021] [--record]

Per converter: seconds for the cohort and per patient, slices per second (the read, checks,
rasterization and scoring; COCA copies the DICOM, orCaScore writes it), and the largest
difference of a patient's converted total score from the truth.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import tempfile
import time
from pathlib import Path

from _common import append_section

from cacflow.convert.coca import convert_coca, synth_coca
from cacflow.convert.orcascore import convert_orcascore, synth_orcascore
from cacflow.synthetic.synth import SynthSettings
from cacflow.tables import read_tsv

FORMATS = {
    "coca": (synth_coca, convert_coca, "Gated_release_final"),
    "orcascore": (synth_orcascore, convert_orcascore, "images"),
}


def run(fmt: str, tmp: Path, n_patients: int, settings: SynthSettings) -> dict:
    synth, convert, root = FORMATS[fmt]
    with open(os.devnull, "w") as quiet:
        synth(tmp / fmt, n_patients, settings, log=quiet)
        start = time.perf_counter()
        rows = convert(tmp / fmt / root, tmp / f"{fmt}_out", log=quiet)
        seconds = time.perf_counter() - start
    truth = {
        r["patient_id"]: float(r["agatston_total"])
        for r in read_tsv(tmp / fmt / "truth" / "patients.tsv")
    }
    converted = [r for r in rows if r["status"] == "converted"]
    return {
        "format": fmt,
        "patients": len(converted),
        "slices": sum(int(r["n_slices"]) for r in converted),
        "seconds": seconds,
        "max_difference": max(
            abs(float(r["agatston_total"]) - truth[r["patient_id"]]) for r in converted
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    settings = SynthSettings(seed=args.seed, size=512)
    with tempfile.TemporaryDirectory(prefix="cacflow-convert-") as tmp:
        results = [run(fmt, Path(tmp), args.patients, settings) for fmt in FORMATS]
    lines = [
        "| converter | patients | slices | seconds | s per patient | slices/s | largest total score difference from the truth |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['format']} | {r['patients']} | {r['slices']} | {r['seconds']:.1f} | "
            f"{r['seconds'] / r['patients']:.2f} | {r['slices'] / r['seconds']:.1f} | "
            f"{r['max_difference']:.3f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.record:
        details = f"{args.patients} synthetic patients of seed {args.seed} at 512 px in each format"
        append_section("convert_speed", details, table)


if __name__ == "__main__":
    main()
