"""How fast the synthetic cohort is made, on one core, against 20 slices/s.

Stages, timed in one run on the same patients (512 x 512, default Gaussian noise):

- render: `simulate_patient` (phantom sampling and rendering, in memory);
- write: `synth_cohort(jobs=1)`, the whole per-patient output (rendering again, DICOM
  series, truth .npz, label and truth tables);
- read: reading the written series back with pydicom (`dcmread` + `pixel_array`), to set
  the writer against the cost of simply loading the same slices;
- radon: the `radon` noise model (sinogram noise, filtered back-projection) on a few
  slices of one patient.

    .venv/bin/python benchmarks/synth_speed.py [--patients 4] [--record]

`--record` appends the table to docs/benchmarks.md.
"""

import os

# One core: BLAS/OpenMP pools size themselves when numpy is first imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import tempfile
import time
from pathlib import Path

import pydicom
from _common import append_section

from cacflow.patients import synthetic_patient_ids
from cacflow.synthetic.synth import SynthSettings, simulate_patient, synth_cohort

TARGET_SLICES_PER_S = 20.0
RADON_SLICES = [0, 1, 2]


def time_render(ids: list[str], settings: SynthSettings) -> tuple[int, float]:
    start = time.perf_counter()
    n_slices = sum(simulate_patient(pid, settings).acquisition.n_slices for pid in ids)
    return n_slices, time.perf_counter() - start


def time_write(out_dir: Path, n_patients: int, settings: SynthSettings) -> tuple[int, float]:
    with open(os.devnull, "w") as quiet:
        start = time.perf_counter()
        rows = synth_cohort(out_dir, n_patients, settings, jobs=1, log=quiet)
        seconds = time.perf_counter() - start
    return sum(int(row["n_slices"]) for row in rows), seconds


def time_read(dicom_dir: Path) -> tuple[int, float]:
    paths = sorted(dicom_dir.glob("*/*.dcm"))
    start = time.perf_counter()
    for path in paths:
        _ = pydicom.dcmread(path).pixel_array  # decoding the pixels is part of reading
    return len(paths), time.perf_counter() - start


def time_radon(patient_id: str, settings: SynthSettings) -> tuple[int, float]:
    start = time.perf_counter()
    patient = simulate_patient(patient_id, settings, slices=RADON_SLICES)
    return len(patient.volume.hu), time.perf_counter() - start


def markdown_table(results: list[tuple[str, int, float]]) -> str:
    lines = [
        "| stage | slices | seconds | slices/s | ratio to 20 slices/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for stage, n_slices, seconds in results:
        rate = n_slices / seconds
        lines.append(
            f"| {stage} | {n_slices} | {seconds:.2f} | {rate:.{1 if rate >= 10 else 2}f} | "
            f"{rate / TARGET_SLICES_PER_S:.{2 if rate >= 1 else 3}f} |"
        )
    return "\n".join(lines)


def record(table: str, n_patients: int) -> None:
    details = (
        f"{n_patients} patients, 512 px, Gaussian noise; radon: "
        f"{len(RADON_SLICES)} slices of {synthetic_patient_ids(1)[0]}"
    )
    append_section("synth_speed", details, table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=4, help="patients per stage (default 4)")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.patients < 1:
        parser.error("--patients must be at least 1")

    settings = SynthSettings(size=512)
    ids = synthetic_patient_ids(args.patients)
    simulate_patient(ids[0], settings, slices=[0])  # warm-up: imports and first-call costs

    results = []
    results.append(("render (simulate_patient)", *time_render(ids, settings)))
    with tempfile.TemporaryDirectory(prefix="cacflow-bench-") as tmp:
        out_dir = Path(tmp)
        results.append(
            ("write (synth_cohort, jobs=1)", *time_write(out_dir, args.patients, settings))
        )
        results.append(("read back (pydicom dcmread + pixel_array)", *time_read(out_dir / "dicom")))
    radon = SynthSettings(size=512, noise_model="radon")
    results.append(("render, radon noise model", *time_radon(ids[0], radon)))

    table = markdown_table(results)
    (_, written, write_s), (_, read, read_s) = results[1], results[2]
    table += (
        f"\n\nWriting a slice costs {(write_s / written) / (read_s / read):.0f}x reading it back."
    )
    print(table)
    if args.record:
        record(table, args.patients)


if __name__ == "__main__":
    main()
