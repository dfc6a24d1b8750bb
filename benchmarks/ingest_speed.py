"""Slices per second through ingest, heart segmentation and the three datasets, on one core,
against the target of 20 slices/s and against only reading the same DICOM files.

Stages, timed in one run on the same synthetic patients (512 x 512, default noise):

- read: pydicom `dcmread` + `pixel_array` of every file (the floor: decoding only);
- ingest: `read_study` (series grouping, checks, PHI guard, sorting, HU);
- segmentation: `segment_heart` on the ingested volume;
- datasets: `build_patient_datasets` (windowing, crops, tiles, labels, PNGs written);
- all: `process_study`, what `cacflow ingest` and the workflow's per-patient jobs do
  (all of the above, plus the QC tables and the segmentation file).

    .venv/bin/python benchmarks/ingest_speed.py [--patients 4] [--record]

`--record` appends the table to docs/benchmarks.md.
"""

import os

# One core: BLAS/OpenMP pools size themselves when numpy is first imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import io
import tempfile
import time
from pathlib import Path

import pydicom
from _common import append_section

from cacflow.dicom.ingest import read_study, volume_of
from cacflow.imaging.segmentation import segment_heart
from cacflow.patients import read_label_table, synthetic_patient_ids
from cacflow.pipeline import StudySettings, make_datasets, process_study
from cacflow.synthetic.synth import SynthSettings, synth_cohort

TARGET_SLICES_PER_S = 20.0


def timed(fn, *args, **kwargs) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def run(cohort: Path, out: Path, ids: list[str]) -> list[tuple[str, int, float]]:
    settings = StudySettings()
    labels = read_label_table(cohort / "labels.tsv")
    totals = dict.fromkeys(["read", "ingest", "segmentation", "datasets", "all"], 0.0)
    n_slices = 0
    for pid in ids:
        study = cohort / "dicom" / pid
        truth = cohort / "truth" / f"{pid}.npz"
        paths = sorted(study.glob("*.dcm"))
        _, seconds = timed(lambda paths=paths: [pydicom.dcmread(p).pixel_array for p in paths])
        totals["read"] += seconds
        report, seconds = timed(read_study, study, pid, settings.ingest)
        totals["ingest"] += seconds
        volume = volume_of(report.ct)
        n_slices += volume.hu.shape[0]
        mask, seconds = timed(
            segment_heart, volume.hu, volume.pixel_spacing_mm, volume.slice_spacing_mm
        )
        totals["segmentation"] += seconds
        _, seconds = timed(
            make_datasets, out / "stages", pid, volume, mask, labels, truth, settings.datasets
        )
        totals["datasets"] += seconds
        _, seconds = timed(
            process_study, study, out / "all", pid, settings, labels, truth, log=io.StringIO()
        )
        totals["all"] += seconds
    names = {
        "read": "read only (pydicom dcmread + pixel_array)",
        "ingest": "ingest (read_study: checks, sort, HU)",
        "segmentation": "heart segmentation (segment_heart)",
        "datasets": "three datasets (PNGs + manifests)",
        "all": "all per-patient steps (process_study)",
    }
    return [(names[k], n_slices, totals[k]) for k in names]


def markdown_table(results: list[tuple[str, int, float]]) -> str:
    lines = [
        "| stage | slices | seconds | slices/s | ms/slice | ratio to 20 slices/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for stage, n_slices, seconds in results:
        rate = n_slices / seconds
        lines.append(
            f"| {stage} | {n_slices} | {seconds:.2f} | {rate:.1f} | "
            f"{1000 * seconds / n_slices:.1f} | {rate / TARGET_SLICES_PER_S:.2f} |"
        )
    read_s, all_s = results[0][2], results[-1][2]
    lines += ["", f"All per-patient steps cost {all_s / read_s:.0f}x reading the files."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4, help="patients (default 4)")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.patients < 1:
        parser.error("--patients must be at least 1")
    ids = synthetic_patient_ids(args.patients)
    with tempfile.TemporaryDirectory(prefix="cacflow-bench-") as tmp:
        cohort = Path(tmp) / "cohort"
        with open(os.devnull, "w") as quiet:
            synth_cohort(cohort, args.patients, SynthSettings(size=512), jobs=1, log=quiet)
        run(cohort, Path(tmp) / "warm", ids[:1])  # warm-up: imports and first-call costs
        results = run(cohort, Path(tmp) / "out", ids)
    table = markdown_table(results)
    print(table)
    if args.record:
        append_section("ingest_speed", f"{args.patients} patients, 512 px, Gaussian noise", table)


if __name__ == "__main__":
    main()
