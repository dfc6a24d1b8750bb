"""Evaluation of the trained classifiers from their predictions (cacflow.learning.training writes the
P(calcium) of every validation and test image in ``predictions.tsv``).

- `metrics_table`: `cacflow.reporting.metrics.metrics_rows` for every (dataset, model) x split, image
  and patient level, with patient-bootstrap 95 % intervals: ``results/metrics.tsv``;
- `table1`: the paper's Table 1 regenerated (parameters and inference ms/image, batch 1 and
  32, on the device that ran the training job) beside the paper's values;
- `table3`: the paper's Table 3 (test accuracy) beside ours, with intervals.

No TensorFlow here: these rules rerun in seconds when only evaluation settings change.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from cacflow.reporting.metrics import METRIC_COLUMNS, metrics_rows
from cacflow.reporting.paper import TABLE1
from cacflow.tables import read_tsv, write_tsv

# predictions.tsv of a training job: P(calcium) of every validation and test image.
PREDICTION_COLUMNS = (
    "dataset",
    "model",
    "split",
    "patient_id",
    "slice",
    "tile",
    "path",
    "label",
    "probability",
)
PREDICTED_SPLITS = ("validation", "test")
# The split of the images of an external cohort (cacflow.learning.external).
EXTERNAL_SPLIT = "external"
TABLE1_COLUMNS = (
    "model",
    "parameters",
    "trainable_parameters",
    "image_size",
    "inference_ms_batch1",
    "inference_ms_batch32",
    "device",
    "paper_model",
    "paper_parameters",
    "paper_inference_ms",
    "paper_gpu",
)


def metrics_table(
    prediction_files: Iterable[Path],
    evaluation: Mapping,
    seed: int,
    splits: Iterable[str] = PREDICTED_SPLITS,
) -> list[dict]:
    """Rows of ``results/metrics.tsv`` (`METRIC_COLUMNS`), in the order of the files, for
    each of `splits` that they hold; `evaluation`: the config's ``evaluation:`` section."""
    n_boot, threshold = evaluation["bootstrap_samples"], evaluation["threshold"]
    rows = []
    for path in prediction_files:
        predictions = read_tsv(Path(path))
        for split in splits:
            chosen = [r for r in predictions if r["split"] == split]
            if not chosen:
                continue
            rows += metrics_rows(
                chosen[0]["dataset"],
                chosen[0]["model"],
                split,
                np.array([r["patient_id"] for r in chosen]),
                np.array([r["label"] for r in chosen]),
                np.array([float(r["probability"]) for r in chosen]),
                threshold=threshold,
                n_boot=n_boot,
                seed=seed,
            )
    return rows


def table1(summary_rows: Iterable[Mapping]) -> list[dict]:
    """One row per network: our parameter count and inference times (median over the
    datasets' training jobs, which share the network and input size) beside the paper's."""
    by_model: dict[str, list[Mapping]] = {}
    for row in summary_rows:
        by_model.setdefault(str(row["model"]), []).append(row)
    paper = {row["model"]: row for row in TABLE1}
    out = []
    for model, rows in by_model.items():
        reference = paper.get(model, {})
        out.append(
            {
                "model": model,
                "parameters": rows[0]["parameters"],
                "trainable_parameters": rows[0]["trainable_parameters"],
                "image_size": rows[0]["image_size"],
                "inference_ms_batch1": _median(rows, "inference_ms_batch1"),
                "inference_ms_batch32": _median(rows, "inference_ms_batch32"),
                "device": rows[0]["device"],
                "paper_model": reference.get("paper_model", ""),
                "paper_parameters": reference.get("parameters", ""),
                "paper_inference_ms": reference.get("inference_ms_per_image", ""),
                "paper_gpu": reference.get("gpu", ""),
            }
        )
    return out


def _median(rows: list[Mapping], key: str) -> float:
    return round(statistics.median(float(r[key]) for r in rows), 3)


def write_metrics(path: Path, rows: list[dict]) -> None:
    write_tsv(Path(path), rows, METRIC_COLUMNS)
