"""Evaluation metrics of the calcium classifiers, per image and per patient, with patient
bootstrap confidence intervals.

Labels are 0 = no_calcium, 1 = calcium (the manifests' strings are accepted too); a
probability is the model's P(calcium). An image is called calcium when its probability is
above the threshold (ties go to no_calcium, as an argmax over the two softmax outputs does,
so the accuracy here is the one Keras logs).

- Image level: accuracy, balanced accuracy (mean of sensitivity and specificity over the
  classes present, as sklearn.metrics.balanced_accuracy_score), ROC AUC (Hanley & McNeil
  1982; sklearn.metrics.roc_auc_score, NaN when one class is absent), sensitivity,
  specificity, F1 and the confusion counts. A metric whose denominator is zero is NaN.
- Patient level: "any slice positive": a patient's label is the maximum of its image labels
  and its probability the maximum of its image probabilities.
- Confidence intervals: percentile bootstrap (Efron & Tibshirani 1993) over PATIENTS, since
  the slices of one patient are not independent: patients are drawn with replacement, every
  image of a drawn patient comes along and a patient drawn twice counts twice. All
  resamples are evaluated at once from per-patient multiplicities, with a weighted
  Mann-Whitney AUC, so 1,000 resamples of a test split take well under a second.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_auc_score

METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity", "f1")
COUNTS = ("tn", "fp", "fn", "tp")
LEVELS = ("image", "patient")
KINDS = ("TP", "FP", "FN", "TN")
METRIC_COLUMNS = (
    "dataset",
    "model",
    "split",
    "level",
    "n_images",
    "n_patients",
    *(column for m in METRICS for column in (m, f"{m}_ci_low", f"{m}_ci_high")),
    *COUNTS,
)
LABEL_VALUES = {"no_calcium": 0, "calcium": 1}
# Bootstrap resamples evaluated together: bounds memory to a few (chunk x images) arrays.
_BOOT_CHUNK = 200


class MetricsError(ValueError):
    """Inputs that cannot be scored (lengths, label values, probabilities out of [0, 1])."""


def as_binary_labels(labels: ArrayLike) -> np.ndarray:
    """0/1 labels from 0/1 numbers, booleans or the manifests' calcium / no_calcium."""
    values = np.asarray(labels)
    if values.dtype.kind in "USO":
        unknown = sorted({str(v) for v in values.ravel()} - set(LABEL_VALUES))
        if unknown:
            raise MetricsError(f"unknown labels {unknown[:5]}; expected {sorted(LABEL_VALUES)}")
        return np.array([LABEL_VALUES[str(v)] for v in values.ravel()], dtype=np.int64)
    values = values.astype(np.int64).ravel()
    if values.size and not np.isin(values, (0, 1)).all():
        raise MetricsError(f"labels must be 0 or 1, got {sorted(set(values.tolist()))[:5]}")
    return values


def predicted_calcium(probabilities: ArrayLike, threshold: float = 0.5) -> np.ndarray:
    """True where an image is called calcium: P(calcium) above the threshold."""
    return np.asarray(probabilities, dtype=np.float64) > threshold


def outcome_kinds(
    labels: ArrayLike, probabilities: ArrayLike, threshold: float = 0.5
) -> np.ndarray:
    """The outcome of each image: TP, FP, FN or TN."""
    truth = as_binary_labels(labels) == 1
    called = predicted_calcium(probabilities, threshold)
    return np.where(truth, np.where(called, "TP", "FN"), np.where(called, "FP", "TN"))


def _checked(labels: ArrayLike, probabilities: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    y = as_binary_labels(labels)
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise MetricsError(f"{y.size} labels but {p.size} probabilities")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise MetricsError("probabilities must be finite and in [0, 1]")
    return y, p


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, np.nan)


def _threshold_metrics(tn, fp, fn, tp) -> dict[str, np.ndarray]:
    """The metrics of confusion counts (scalars or arrays of resamples)."""
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # both NaN: no image at all
        balanced = np.nanmean(np.stack([sensitivity, specificity]), axis=0)
    return {
        "accuracy": _ratio(tp + tn, tn + fp + fn + tp),
        "balanced_accuracy": balanced,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
    }


def image_metrics(
    labels: ArrayLike, probabilities: ArrayLike, threshold: float = 0.5
) -> dict[str, float]:
    """Accuracy, balanced accuracy, ROC AUC, sensitivity, specificity, F1 (NaN where
    undefined) and the confusion counts tn, fp, fn, tp (ints)."""
    y, p = _checked(labels, probabilities)
    called = predicted_calcium(p, threshold)
    counts = {
        "tn": int(np.sum((y == 0) & ~called)),
        "fp": int(np.sum((y == 0) & called)),
        "fn": int(np.sum((y == 1) & ~called)),
        "tp": int(np.sum((y == 1) & called)),
    }
    values = {k: float(v) for k, v in _threshold_metrics(**counts).items()}
    values["roc_auc"] = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {**{m: values[m] for m in METRICS}, **counts}


def _patient_codes(patient_ids: ArrayLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(patient_ids).astype(str).ravel()
    if ids.size != n:
        raise MetricsError(f"{ids.size} patient ids but {n} images")
    return np.unique(ids, return_inverse=True)


def patient_level(
    patient_ids: ArrayLike, labels: ArrayLike, probabilities: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patient ("any slice positive"): sorted patient ids, label = max of the image
    labels, probability = max of the image probabilities."""
    y, p = _checked(labels, probabilities)
    ids, codes = _patient_codes(patient_ids, y.size)
    patient_labels = np.zeros(ids.size, dtype=np.int64)
    np.maximum.at(patient_labels, codes, y)
    patient_probabilities = np.zeros(ids.size, dtype=np.float64)
    np.maximum.at(patient_probabilities, codes, p)
    return ids, patient_labels, patient_probabilities


def _weighted_metrics(
    y: np.ndarray, p: np.ndarray, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """The metrics of each row of `weights` (resamples x items: how often each item is in
    the resample). The AUC is the Mann-Whitney statistic with each pair weighted by the
    product of its items' weights, ties counting one half, as roc_auc_score on the
    resample with its repeated items."""
    called = predicted_calcium(p, threshold)
    positive = y == 1
    counts = {
        "tn": weights[:, ~positive & ~called].sum(axis=1),
        "fp": weights[:, ~positive & called].sum(axis=1),
        "fn": weights[:, positive & ~called].sum(axis=1),
        "tp": weights[:, positive & called].sum(axis=1),
    }
    values = _threshold_metrics(**counts)

    order = np.argsort(p, kind="stable")
    p_sorted, positive_sorted = p[order], positive[order]
    w_sorted = weights[:, order]
    # Negative weight below each item's score and tied with it, from cumulative sums at the
    # boundaries of the groups of equal scores.
    negative_cum = np.zeros((weights.shape[0], p.size + 1))
    np.cumsum(np.where(positive_sorted, 0.0, w_sorted), axis=1, out=negative_cum[:, 1:])
    group_start = np.searchsorted(p_sorted, p_sorted, side="left")
    group_end = np.searchsorted(p_sorted, p_sorted, side="right")
    below = negative_cum[:, group_start[positive_sorted]]
    tied = negative_cum[:, group_end[positive_sorted]] - below
    wins = np.sum(w_sorted[:, positive_sorted] * (below + 0.5 * tied), axis=1)
    n_positive = counts["tp"] + counts["fn"]
    n_negative = counts["tn"] + counts["fp"]
    values["roc_auc"] = _ratio(wins, n_positive * n_negative)
    return values


def _multiplicities(rng: np.random.Generator, n_boot: int, n_patients: int) -> np.ndarray:
    """(n_boot, n_patients): how often each patient is drawn in each resample."""
    draws = rng.integers(0, n_patients, size=(n_boot, n_patients))
    flat = (draws + np.arange(n_boot)[:, None] * n_patients).ravel()
    return np.bincount(flat, minlength=n_boot * n_patients).reshape(n_boot, n_patients)


def bootstrap_intervals(
    patient_ids: ArrayLike,
    labels: ArrayLike,
    probabilities: ArrayLike,
    level: str,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    threshold: float = 0.5,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals (alpha/2, 1 - alpha/2) of each metric in METRICS over `n_boot`
    resamples of the patients, at `level` "image" (the images of the drawn patients) or
    "patient" (the drawn patients' "any slice positive" calls). Resamples where a metric is
    undefined (e.g. one class only: AUC) are left out of its interval; (NaN, NaN) when it is
    undefined in all. Deterministic for a seed."""
    if level not in LEVELS:
        raise MetricsError(f"level must be one of {LEVELS}, got {level!r}")
    if n_boot < 1 or not 0 < alpha < 1:
        raise MetricsError(f"need n_boot >= 1 and 0 < alpha < 1, got {n_boot}, {alpha}")
    y, p = _checked(labels, probabilities)
    if level == "patient":
        _, y, p = patient_level(patient_ids, y, p)
        codes = np.arange(y.size)
    else:
        _, codes = _patient_codes(patient_ids, y.size)
    n_patients = int(codes.max()) + 1 if codes.size else 0
    if n_patients == 0:
        return {m: (float("nan"), float("nan")) for m in METRICS}

    multiplicities = _multiplicities(np.random.default_rng(seed), n_boot, n_patients)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in METRICS}
    for start in range(0, n_boot, _BOOT_CHUNK):
        weights = multiplicities[start : start + _BOOT_CHUNK][:, codes].astype(np.float64)
        for m, v in _weighted_metrics(y, p, weights, threshold).items():
            samples[m].append(v)
    quantiles = [100 * alpha / 2, 100 * (1 - alpha / 2)]
    intervals = {}
    for m in METRICS:
        values = np.concatenate(samples[m])
        values = values[np.isfinite(values)]
        if values.size == 0:
            intervals[m] = (float("nan"), float("nan"))
        else:
            low, high = np.percentile(values, quantiles)
            intervals[m] = (float(low), float(high))
    return intervals


def metrics_rows(
    dataset: str,
    model: str,
    split: str,
    patient_ids: ArrayLike,
    labels: ArrayLike,
    probabilities: ArrayLike,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> list[dict]:
    """The two rows (level image, then patient) of results/metrics.tsv for one dataset x
    model x split, with the columns METRIC_COLUMNS (write them with
    cacflow.tables.write_tsv(path, rows, METRIC_COLUMNS))."""
    y, p = _checked(labels, probabilities)
    _, patient_y, patient_p = patient_level(patient_ids, y, p)
    scored = {"image": (y, p), "patient": (patient_y, patient_p)}
    rows = []
    for level in LEVELS:
        values = image_metrics(*scored[level], threshold=threshold)
        intervals = bootstrap_intervals(
            patient_ids, y, p, level, n_boot=n_boot, seed=seed, alpha=alpha, threshold=threshold
        )
        row: dict = {
            "dataset": dataset,
            "model": model,
            "split": split,
            "level": level,
            "n_images": int(y.size),
            "n_patients": int(patient_y.size),
        }
        for m in METRICS:
            row[m] = values[m]
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = intervals[m]
        row.update({c: values[c] for c in COUNTS})
        rows.append(row)
    return rows


def select_rows(
    rows: Iterable[Mapping], split: str = "test", level: str = "image"
) -> list[Mapping]:
    """The rows of a metrics table (as written, or read back as strings) of one split and
    level."""
    return [r for r in rows if r["split"] == split and r["level"] == level]


def confusion_matrix(row: Mapping) -> np.ndarray:
    """[[tn, fp], [fn, tp]] of a metrics row: rows true no_calcium / calcium, columns
    called no_calcium / calcium."""
    return np.array([[int(row["tn"]), int(row["fp"])], [int(row["fn"]), int(row["tp"])]])
