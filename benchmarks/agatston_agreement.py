"""Agreement of the classical Agatston score (standard algorithm inside the heart mask) with the
true coronary score of synthetic patients, against the targets ICC >= 0.95 and linear
kappa >= 0.90 over the risk categories.

Each patient goes through the library calls of the workflow's per-patient rules: synthetic
DICOM series (`synth_patient`), ingest (`read_study`), heart mask (`segment_volume`),
classical score (`classical_score`). The truth maps then explain the classical score: each
of its lesions goes to the kind that holds most of its pixels,

- coronary: true coronary lesion pixels (what the truth scores);
- non-coronary: aortic wall, aortic valve and mitral annulus calcium (the truth leaves it
  out, classical counts it where it lies in the heart mask);
- outside the true heart: the mask spilling onto bone, cartilage or liver;
- inside the true heart, not calcium: image noise (the phantom's heart holds no bone or
  cartilage);

so the four add up to the classical score. A diagnostic row scores only the true coronary
pixels inside the heart mask: truth minus that is what the mask cuts off.

    .venv/bin/python benchmarks/agatston_agreement.py [--patients 30] [--seed 2021]
        [--pixel-spacing 0.5 0.8] [--slice-thickness 3.0] [--record]

Defaults are the workflow's synthetic cohort (512 px, seed 2021, the seed the segmentation
was tuned on); `--seed 9001 --pixel-spacing 0.4 0.9 --slice-thickness 2.5` is a cohort no
tuning saw. `--record` appends the tables to docs/benchmarks.md.
"""

import os

# One core: BLAS/OpenMP pools size themselves when numpy is first imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import append_section

from cacflow.agatston import agatston_score, risk_category
from cacflow.agreement import agreement_rows
from cacflow.ingest import read_study, volume_of
from cacflow.pipeline import StudySettings, coronary_lesion_mask, segment_volume
from cacflow.scoring import classical_score
from cacflow.synth import SynthSettings, patient_ids, synth_patient

ICC_TARGET, KAPPA_TARGET = 0.95, 0.90
CLASSICAL = "classical"
ORACLE = "coronary in mask (diagnostic)"


KINDS = ("coronary", "noncoronary", "outside_heart", "inside_heart")


def kind_map(truth_path: Path, instance_numbers: np.ndarray, coronary: np.ndarray) -> np.ndarray:
    """Per pixel, 1 + the index in KINDS of what the phantom put there."""
    with np.load(truth_path) as data:
        index = {int(n): k for k, n in enumerate(data["instance_numbers"])}
        order = [index[int(n)] for n in instance_numbers]
        noncoronary = data["noncoronary_calcium"][order].astype(bool)
        true_heart = data["heart_mask"][order].astype(bool)
    kinds = np.where(true_heart, 4, 3).astype(np.int8)
    kinds[noncoronary] = 2
    kinds[coronary] = 1
    return kinds


def score_patient(cohort: Path, pid: str, settings: SynthSettings) -> dict:
    truth_row = synth_patient(cohort, pid, settings)
    study = StudySettings()
    report = read_study(cohort / "dicom" / pid, pid, study.ingest)
    if not report.accepted:
        raise RuntimeError(f"{pid}: refused at ingest: {report.error.reason}")
    volume = volume_of(report.ct)
    heart_mask = segment_volume(volume, study.segmentation)
    score = classical_score(
        pid,
        volume.hu,
        heart_mask,
        volume.instance_numbers,
        volume.pixel_spacing_mm,
        volume.slice_spacing_mm,
        study.datasets.grid,
    )
    truth_path = cohort / "truth" / f"{pid}.npz"
    coronary = coronary_lesion_mask(truth_path, volume.instance_numbers)
    spacing = (volume.pixel_spacing_mm, volume.slice_spacing_mm)
    # The classical lesions again, each labelled with its majority kind.
    kinds = kind_map(truth_path, volume.instance_numbers, coronary)
    by_kind = agatston_score(volume.hu, heart_mask, *spacing, lesion_labels=kinds).score_by_label()
    coronary_in = agatston_score(volume.hu, coronary & heart_mask, *spacing).total
    shutil.rmtree(cohort / "dicom" / pid)  # ~35 MB a patient
    truth = float(truth_row["agatston_total"])
    classical = float(score.row["agatston"])
    return {
        "patient_id": pid,
        "truth": truth,
        "truth_category": truth_row["risk_category"],
        "classical": classical,
        "classical_category": score.row["risk_category"],
        "coronary_in_mask": coronary_in,
        **{kind: by_kind.get(k, 0.0) for k, kind in enumerate(KINDS, start=1)},
        "kinds": truth_row["noncoronary_calcifications"],
        "pixel_mm": float(truth_row["pixel_spacing_mm"]),
        "slice_mm": float(truth_row["slice_thickness_mm"]),
    }


def score_rows(patients: list[dict]) -> list[dict]:
    """Merged-table rows (cacflow.scoring.MERGED_COLUMNS) of classical and the diagnostic."""
    rows = []
    for method, key in ((CLASSICAL, "classical"), (ORACLE, "coronary_in_mask")):
        for p in patients:
            rows.append(
                {
                    "patient_id": p["patient_id"],
                    "method": method,
                    "agatston": p[key],
                    "risk_category": risk_category(p[key]),
                    "truth_agatston": p["truth"],
                    "truth_risk_category": p["truth_category"],
                }
            )
    return rows


def _number(cell: str, digits: int = 1) -> str:
    return f"{float(cell):.{digits}f}" if cell else "-"


def markdown_tables(patients: list[dict]) -> str:
    lines = [
        (
            "| method | patients | ICC(A,1) | linear kappa | Bland-Altman mean | 95 % limits "
            "| category accuracy |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    summary = agreement_rows(score_rows(patients))
    for row in summary:
        lines.append(
            f"| {row['method']} | {row['n_patients']} | {row['icc'] or '-'} | "
            f"{row['kappa_linear'] or '-'} | {_number(row['bland_altman_mean'])} | "
            f"{_number(row['loa_low'])} to {_number(row['loa_high'])} | "
            f"{row['category_accuracy'] or '-'} |"
        )
    icc, kappa = (float(summary[0][key] or "nan") for key in ("icc", "kappa_linear"))
    verdict = {True: "met", False: "not met"}
    sums = {k: sum(p[k] for p in patients) for k in ("truth", "classical", "coronary_in_mask")}
    sums.update({k: sum(p[k] for p in patients) for k in KINDS})
    lines += [
        "",
        (
            f"Classical: ICC {icc:.3f} (target {ICC_TARGET}: {verdict[icc >= ICC_TARGET]}), "
            f"linear kappa {kappa:.3f} (target {KAPPA_TARGET}: {verdict[kappa >= KAPPA_TARGET]})."
        ),
        "",
        (
            f"Where the classical score comes from, summed over the cohort (truth "
            f"{sums['truth']:.0f}): classical {sums['classical']:.0f} = coronary "
            f"{sums['coronary']:.0f} + non-coronary calcium {sums['noncoronary']:.0f} + outside "
            f"the true heart {sums['outside_heart']:.0f} + inside the true heart, not calcium "
            f"{sums['inside_heart']:.0f}. The mask cuts off "
            f"{sums['truth'] - sums['coronary_in_mask']:.0f} of the true score."
        ),
        "",
        (
            "Patients whose classical score differs from the truth by more than 10 or whose risk "
            "category differs:"
        ),
        "",
        (
            "| patient | pixel mm | slice mm | truth | classical | coronary | non-coronary "
            "| outside true heart | inside true heart, not calcium | non-coronary calcium of the "
            "phantom | category |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for p in patients:
        same = p["classical_category"] == p["truth_category"]
        if abs(p["classical"] - p["truth"]) <= 10 and same:
            continue
        lines.append(
            f"| {p['patient_id']} | {p['pixel_mm']:.3f} | {p['slice_mm']:g} | {p['truth']:.1f} "
            f"| {p['classical']:.1f} | {p['coronary']:.1f} | {p['noncoronary']:.1f} "
            f"| {p['outside_heart']:.1f} | {p['inside_heart']:.1f} | {p['kinds']} "
            f"| {p['truth_category']} -> {p['classical_category']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=30, help="patients (default 30)")
    parser.add_argument("--seed", type=int, default=2021, help="cohort seed (default 2021)")
    parser.add_argument("--size", type=int, default=512, help="pixels per side (default 512)")
    parser.add_argument(
        "--pixel-spacing", type=float, nargs=2, default=(0.5, 0.8), metavar=("MIN", "MAX")
    )
    parser.add_argument("--slice-thickness", type=float, nargs="+", default=(3.0,))
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.patients < 2:
        parser.error("--patients must be at least 2")
    settings = SynthSettings(
        seed=args.seed,
        size=args.size,
        pixel_spacing_mm=tuple(args.pixel_spacing),
        slice_thickness_mm=tuple(args.slice_thickness),
    )
    start = time.perf_counter()
    patients = []
    with tempfile.TemporaryDirectory(prefix="cacflow-agatston-") as tmp:
        for pid in patient_ids(args.patients):
            patients.append(score_patient(Path(tmp), pid, settings))
            p = patients[-1]
            print(
                f"{pid}: truth {p['truth']:.1f}, classical {p['classical']:.1f} = "
                + " + ".join(f"{kind} {p[kind]:.1f}" for kind in KINDS)
                + f"; coronary in mask {p['coronary_in_mask']:.1f}; {p['kinds']}",
                flush=True,
            )
    seconds = time.perf_counter() - start
    table = markdown_tables(patients)
    print(table)
    if args.record:
        details = (
            f"{args.patients} synthetic patients, seed {args.seed}, {args.size} px, pixels "
            f"{args.pixel_spacing[0]}-{args.pixel_spacing[1]} mm at 512 px, slices "
            f"{'/'.join(f'{t:g}' for t in args.slice_thickness)} mm, Gaussian noise "
            f"{settings.noise_sd_hu:g} HU; synthesis, ingest, segmentation and scoring took "
            f"{seconds:.0f} s"
        )
        append_section("agatston_agreement", details, table)


if __name__ == "__main__":
    main()
