"""How well trained models tell calcium slices from the rest in synthetic patients of a cohort
they never saw (another seed), scored as a user would score a new study: `cacflow predict`'s
library call (`predict_study`) per patient.

A slice's probability is the largest P(calcium) of its images (one image a slice, or the nine
tiles of the cropped dataset); its truth is the cohort's slice label table (coronary calcium
in the slice). Slices without heart have no image and are left out: every calcium slice is a
heart slice, so the AUC is over the slices a model is actually asked about. Per model: slice
ROC AUC, and at the threshold (default 0.5) sensitivity, specificity and balanced accuracy.
The issue's target for the default run's cropped/ResNet50: slice AUC >= 0.95.

    .venv/bin/python benchmarks/unseen_slices.py --models results/models/cropped/*/model.keras
        [--patients 12] [--seed 3131] [--threshold 0.5] [--training "..."] [--record]
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import shutil
from pathlib import Path

import numpy as np
from _common import (
    add_cohort_arguments,
    append_section,
    cohort_details,
    cohort_settings,
    score_cohort,
)
from sklearn.metrics import roc_auc_score

from cacflow.predict import predict_study
from cacflow.synthetic.synth import synth_patient
from cacflow.tables import read_tsv

SLICE_AUC_TARGET = 0.95


def model_name(path: Path) -> str:
    """<dataset>/<model> of results/models/<dataset>/<model>/model.keras, else the path."""
    return f"{path.parent.parent.name}/{path.parent.name}"


def score_patient(cohort: Path, pid: str, settings, models: list[Path]) -> dict:
    synth_patient(cohort, pid, settings)
    truth = {
        int(r["instance_number"]): int(r["calcium"])
        for r in read_tsv(cohort / "labels" / f"{pid}.tsv")
    }
    slices = {}
    for path in models:
        record = predict_study(
            path, cohort / "dicom" / pid, cohort / "out" / pid, patient_id=pid
        ).record
        slices[model_name(path)] = [
            (truth[s["slice"]], s["probability"]) for s in record["slices"] if s["n_images"]
        ]
    shutil.rmtree(cohort / "dicom" / pid)  # ~35 MB a patient
    return {"patient_id": pid, "calcium_slices": sum(truth.values()), "slices": slices}


def slice_rows(patients: list[dict], threshold: float) -> list[dict]:
    rows = []
    for name in patients[0]["slices"]:
        pairs = np.array([pair for p in patients for pair in p["slices"][name]], dtype=float)
        truth, probability = pairs[:, 0].astype(int), pairs[:, 1]
        called = probability >= threshold
        sensitivity = float(called[truth == 1].mean())
        specificity = float((~called[truth == 0]).mean())
        rows.append(
            {
                "model": name,
                "slices": len(truth),
                "calcium_slices": int(truth.sum()),
                "slice_auc": float(roc_auc_score(truth, probability)),
                "sensitivity": sensitivity,
                "specificity": specificity,
                "balanced_accuracy": (sensitivity + specificity) / 2,
            }
        )
    return rows


def markdown_table(rows: list[dict], threshold: float) -> str:
    lines = [
        (
            f"| model | heart slices | calcium slices | slice AUC | sensitivity ({threshold:g}) "
            "| specificity | balanced accuracy |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['slices']} | {r['calcium_slices']} | {r['slice_auc']:.3f} "
            f"| {r['sensitivity']:.3f} | {r['specificity']:.3f} | {r['balanced_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, nargs="+", required=True, help="model.keras files")
    add_cohort_arguments(parser, patients=12, seed=3131)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--training", default="", help="how the models were trained (recorded)")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    settings = cohort_settings(parser, args)
    for path in args.models:
        if not path.is_file():
            parser.error(f"--models {path}: no such file")
    patients, seconds = score_cohort(
        args,
        "cacflow-unseen-",
        lambda cohort, pid: score_patient(cohort, pid, settings, args.models),
        lambda p: f"{p['calcium_slices']} calcium slices",
    )
    rows = slice_rows(patients, args.threshold)
    table = markdown_table(rows, args.threshold)
    print(table)
    if args.record:
        details = (
            f"slice AUC of each model on patients it never saw (target for the default run's "
            f"cropped/resnet50: >= {SLICE_AUC_TARGET}); the largest P(calcium) of a slice's "
            f"images against the slice label, heart slices only"
            f"{'; trained: ' + args.training if args.training else ''}. Cohort: "
            f"{cohort_details(args, settings)}; synthesis and predict took {seconds:.0f} s"
        )
        append_section("unseen_slices", details, table)


if __name__ == "__main__":
    main()
