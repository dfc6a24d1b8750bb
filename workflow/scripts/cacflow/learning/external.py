"""Trained networks scored on an external cohort: patients that no network trained on and no
setting was chosen on (config ``external:``), read and classified as `cacflow predict` does.

The cohort's images come from the same per-patient chain as the training cohort's (rule
``process_external_patient``); each trained model then classifies every labelled image of its
dataset with `cacflow.predict.classify`, after the checks of `cacflow predict` (the model's
stored preprocessing, its input and output). The rows have the columns of a training job's
predictions (`cacflow.reporting.evaluation.PREDICTION_COLUMNS`) with split ``external``, so metrics,
hybrid scores and Table 3 take them as they take the test split.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from cacflow.imaging.datasets import DatasetSettings
from cacflow.learning.inputs import CLASSES
from cacflow.learning.model_file import load_classifier, model_preprocessing
from cacflow.predict import classify
from cacflow.reporting.evaluation import EXTERNAL_SPLIT
from cacflow.tables import read_tsv

log = logging.getLogger("cacflow.learning.external")


class ExternalCohortError(ValueError):
    """The external cohort cannot be scored with a model: other images than it was trained
    on, or none."""


def predict_cohort(
    model_path: Path, dataset_root: Path, datasets_config: Mapping, batch_size: int = 32
) -> list[dict]:
    """P(calcium) of every labelled image of the external dataset in `dataset_root` (its
    ``manifest.tsv``), by the model in `model_path`; rows of
    `cacflow.reporting.evaluation.PREDICTION_COLUMNS`."""
    prep = model_preprocessing(model_path)
    dataset_root = Path(dataset_root)
    dataset = dataset_root.name
    if prep["dataset"] != dataset:
        raise ExternalCohortError(
            f"{model_path}: trained on the {prep['dataset']} images, asked to classify {dataset}"
        )
    made = DatasetSettings.from_config(datasets_config)
    expected = DatasetSettings.from_config(prep["datasets"])
    if made != expected:
        raise ExternalCohortError(
            f"{model_path}: the external images were made with {made}, the model expects "
            f"{expected}; run both cohorts with the same datasets settings"
        )
    rows = [r for r in read_tsv(dataset_root / "manifest.tsv") if r["label"] in CLASSES]
    if not rows:
        raise ExternalCohortError(f"{dataset_root}: no labelled external images")
    model = load_classifier(model_path, prep)
    probabilities = classify(
        model, [str(dataset_root / r["path"]) for r in rows], prep, batch_size=batch_size
    )
    log.info(
        "%s/%s: %d external images of %d patients",
        dataset,
        prep["model"],
        len(rows),
        len({r["patient_id"] for r in rows}),
    )
    return [
        {
            "dataset": dataset,
            "model": prep["model"],
            "split": EXTERNAL_SPLIT,
            "patient_id": r["patient_id"],
            "slice": r["slice"],
            "tile": r["tile"],
            "path": r["path"],
            "label": r["label"],
            "probability": f"{float(p):.6f}",
        }
        for r, p in zip(rows, probabilities, strict=True)
    ]
