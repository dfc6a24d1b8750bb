"""Agreement of calcium scores with a reference: ICC, weighted kappa, Bland-Altman.

Methods, as the CAC literature reports them (van Velzen et al. 2020, de Vos et al. 2019,
the orCaScore challenge):

- ICC(A,1): two-way random effects, absolute agreement, single measures (McGraw & Wong,
  Psychol Methods 1996, 1:30-46, case 2A; = ICC(2,1) of Shrout & Fleiss, Psychol Bull 1979,
  86:420-428), from the two-way ANOVA mean squares of an n subjects x k raters table:
  ``(MSR - MSE) / (MSR + (k - 1) MSE + k (MSC - MSE) / n)``; on raw Agatston scores;
- Cohen's kappa with linear weights ``1 - |i - j| / (K - 1)`` over the ordered risk
  categories 0, 1-10, 11-100, 101-400, > 400 (Cohen, Psychol Bull 1968); all K categories
  set the weight scale, also those neither rater used;
- Bland-Altman (Lancet 1986): mean and SD (n - 1) of the differences method - reference,
  95 % limits of agreement mean +- 1.96 SD.

Undefined values (fewer than two patients, no variance, every patient in one category for
both raters) are NaN, written as empty cells.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cacflow.scoring.agatston import RISK_CATEGORIES

AGREEMENT_COLUMNS = (
    "method",
    "n_patients",
    "icc",
    "kappa_linear",
    "bland_altman_mean",
    "loa_low",
    "loa_high",
    "category_accuracy",
)
LOA_Z = 1.96


def icc_a1(ratings: np.ndarray | Sequence[Sequence[float]]) -> float:
    """ICC(A,1) of an n subjects x k raters table (n >= 2, k >= 2); NaN when undefined."""
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"expected subjects x raters (k >= 2), got shape {x.shape}")
    n, k = x.shape
    if n < 2:
        return math.nan
    grand = x.mean()
    ss_rows = k * float(((x.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((x.mean(axis=0) - grand) ** 2).sum())
    ss_error = float(((x - grand) ** 2).sum()) - ss_rows - ss_cols
    ms_rows = ss_rows / (n - 1)
    ms_cols = ss_cols / (k - 1)
    ms_error = ss_error / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n
    if denominator <= 0:
        return math.nan
    return (ms_rows - ms_error) / denominator


def weighted_kappa(
    rater_a: Sequence[str],
    rater_b: Sequence[str],
    categories: Sequence[str] = RISK_CATEGORIES,
) -> float:
    """Linearly weighted Cohen's kappa of two raters over ordered `categories`."""
    if len(rater_a) != len(rater_b):
        raise ValueError(f"raters differ in length: {len(rater_a)} and {len(rater_b)}")
    index = {c: i for i, c in enumerate(categories)}
    unknown = sorted({str(c) for c in (*rater_a, *rater_b)} - set(index))
    if unknown:
        raise ValueError(f"categories {unknown} are not among {list(categories)}")
    n_categories = len(categories)
    if not rater_a or n_categories < 2:
        return math.nan
    observed = np.zeros((n_categories, n_categories))
    for a, b in zip(rater_a, rater_b, strict=True):
        observed[index[str(a)], index[str(b)]] += 1
    observed /= observed.sum()
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices(observed.shape)
    weights = 1.0 - np.abs(i - j) / (n_categories - 1)
    agreement_observed = float((weights * observed).sum())
    agreement_expected = float((weights * expected).sum())
    if math.isclose(agreement_expected, 1.0):
        return math.nan
    return (agreement_observed - agreement_expected) / (1.0 - agreement_expected)


@dataclass(frozen=True)
class BlandAltman:
    n: int
    mean: float  # of the differences method - reference
    sd: float
    loa_low: float
    loa_high: float


def bland_altman(method: Sequence[float], reference: Sequence[float]) -> BlandAltman:
    diff = np.asarray(method, dtype=float) - np.asarray(reference, dtype=float)
    if diff.ndim != 1:
        raise ValueError(f"expected two equal-length 1-D series, got shape {diff.shape}")
    n = diff.size
    mean = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n >= 2 else math.nan
    return BlandAltman(n, mean, sd, mean - LOA_Z * sd, mean + LOA_Z * sd)


AGREEMENT_STATISTICS = ("icc", "kappa_linear", "category_accuracy")


def agreement_statistics(
    predicted: Sequence[float],
    truth: Sequence[float],
    predicted_category: Sequence[str],
    truth_category: Sequence[str],
) -> dict[str, float]:
    """ICC(A,1), linear kappa and category accuracy (`AGREEMENT_STATISTICS`) of scores and
    their risk categories against the truth; NaN where undefined."""
    n = len(predicted)
    same = sum(a == b for a, b in zip(predicted_category, truth_category, strict=True))
    return {
        "icc": icc_a1(np.column_stack([predicted, truth])) if n else math.nan,
        "kappa_linear": weighted_kappa(predicted_category, truth_category),
        "category_accuracy": same / n if n else math.nan,
    }


def bootstrap_agreement(
    predicted: Sequence[float],
    truth: Sequence[float],
    predicted_category: Sequence[str],
    truth_category: Sequence[str],
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of `agreement_statistics` over patients drawn with
    replacement (`samples` resamples; those where a statistic is undefined are left out)."""
    arrays = [np.asarray(a) for a in (predicted, truth, predicted_category, truth_category)]
    rng = np.random.default_rng(seed)
    drawn: dict[str, list[float]] = {key: [] for key in AGREEMENT_STATISTICS}
    for _ in range(samples):
        pick = rng.integers(0, len(arrays[0]), len(arrays[0]))
        values = agreement_statistics(*(a[pick].tolist() for a in arrays))
        for key, value in values.items():
            if not math.isnan(value):
                drawn[key].append(value)
    return {
        key: (
            tuple(float(q) for q in np.percentile(values, [2.5, 97.5]))
            if values
            else (math.nan, math.nan)
        )
        for key, values in drawn.items()
    }


def has_truth(row: Mapping) -> bool:
    """Whether a scores-table row holds a true score (own data: empty, or no column)."""
    value = row.get("truth_agatston")
    return value is not None and str(value).strip() != ""


def agreement_rows(score_rows: Iterable[Mapping]) -> list[dict]:
    """One row (`AGREEMENT_COLUMNS`) per method of a merged scores table
    (`cacflow.scoring.scoring.MERGED_COLUMNS`), against the truth columns; patients without a truth
    are left out. Methods in order of first appearance."""
    by_method: dict[str, list[Mapping]] = {}
    for row in score_rows:
        by_method.setdefault(str(row["method"]), [])
        if has_truth(row):
            by_method[str(row["method"])].append(row)
    # A method scored on part of the cohort (hybrid: the test patients) is compared with the
    # classical score of the same patients, on the row after it.
    classical = {str(r.get("patient_id")): r for r in by_method.get("classical", [])}
    for method, rows in list(by_method.items()):
        patients = [str(r.get("patient_id")) for r in rows]
        if method != "classical" and len(patients) < len(classical):
            same = [classical[p] for p in patients if p in classical]
            by_method[f"classical, same patients as {method}"] = same
    if classical:
        others = sorted(
            (m for m in by_method if m != "classical"),
            key=lambda m: (m.removeprefix("classical, same patients as "), m),
        )
        by_method = {"classical": by_method["classical"], **{m: by_method[m] for m in others}}
    out = []
    for method, rows in by_method.items():
        predicted = [float(r["agatston"]) for r in rows]
        truth = [float(r["truth_agatston"]) for r in rows]
        predicted_category = [str(r["risk_category"]) for r in rows]
        truth_category = [str(r["truth_risk_category"]) for r in rows]
        limits = bland_altman(predicted, truth)
        statistics = agreement_statistics(predicted, truth, predicted_category, truth_category)
        values = {
            "icc": statistics["icc"],
            "kappa_linear": statistics["kappa_linear"],
            "bland_altman_mean": limits.mean,
            "loa_low": limits.loa_low,
            "loa_high": limits.loa_high,
            "category_accuracy": statistics["category_accuracy"],
        }
        out.append(
            {"method": method, "n_patients": len(rows), **{k: _cell(v) for k, v in values.items()}}
        )
    return out


def _cell(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"
