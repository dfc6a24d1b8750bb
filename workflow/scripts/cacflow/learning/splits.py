"""Patient-level train / validation / test splits, stratified by calcium and risk category.

Lee et al. (Sensors 2021) split images, after augmenting them, so slices of one patient (and
copies of one slice) could sit on both sides of the split. Here whole patients are assigned,
once, and every dataset (original, segmented, cropped) uses the same assignment.

Method, for fractions f_k (default 0.8 / 0.1 / 0.1):

- split sizes: N f_k rounded by largest remainder, so each is within one patient of target;
- per class (calcium / no calcium): the class's share of each split is n_c f_k rounded, chosen
  jointly over the classes so the split sizes above hold and every split gets at least one
  patient of each class. A class smaller than the number of splits cannot do that:
  `SplitError` says how many patients are needed;
- within a class, patients are ordered by stratum (risk category; categories with fewer than
  `risk_min_patients` patients are pooled) and shuffled within it by the seed, then dealt to
  the splits in an even interleaving (largest deficit first), so every risk category is spread
  over the splits in proportion.

Assumption: a patient's calcium status is the truth (synthetic cohort: Agatston > 0) or, for
own data, whether any of its images is labelled calcium; risk category only when known.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from cacflow import settings_from_config

SPLITS = ("train", "validation", "test")
SPLIT_COLUMNS = ("patient_id", "split", "calcium", "risk_category")


class SplitError(ValueError):
    """A cohort that cannot be split as asked (too few patients of a class, bad fractions)."""


@dataclass(frozen=True)
class SplitSettings:
    """Fed from the workflow's ``splits:`` config section."""

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    # Risk categories with fewer patients than this are pooled within their calcium class.
    risk_min_patients: int = 10

    def __post_init__(self) -> None:
        values = self.fractions()
        if any(v <= 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
            raise SplitError(
                f"split fractions must be positive and add up to 1, got "
                f"train {self.train}, validation {self.validation}, test {self.test}"
            )

    def fractions(self) -> tuple[float, float, float]:
        return (self.train, self.validation, self.test)

    @classmethod
    def from_config(cls, config: Mapping) -> SplitSettings:
        return settings_from_config(cls, config)


@dataclass(frozen=True)
class Patient:
    patient_id: str
    calcium: bool
    risk_category: str = ""


def patients_from_manifest(rows: Iterable[Mapping]) -> list[Patient]:
    """Patients with images (refused studies have none); calcium when any image is."""
    calcium: dict[str, bool] = {}
    for row in rows:
        pid = str(row["patient_id"])
        calcium[pid] = calcium.get(pid, False) or row["label"] == "calcium"
    return [Patient(pid, calcium[pid]) for pid in sorted(calcium)]


def patients_from_truth(truth_rows: Iterable[Mapping], with_images: Iterable[str]) -> list[Patient]:
    """Patients of a known truth table (patient_id, agatston_total, risk_category), restricted
    to those with images."""
    keep = set(with_images)
    truth = {str(r["patient_id"]): r for r in truth_rows}
    missing = sorted(keep - set(truth))
    if missing:
        raise SplitError(f"patients with images but no truth row: {missing}")
    return [
        Patient(pid, float(truth[pid]["agatston_total"]) > 0, str(truth[pid]["risk_category"]))
        for pid in sorted(keep)
    ]


def split_patients(patients: list[Patient], settings: SplitSettings, seed: int) -> list[dict]:
    """Rows of the split table (`SPLIT_COLUMNS`), in patient order."""
    ids = [p.patient_id for p in patients]
    if len(set(ids)) != len(ids):
        raise SplitError("a patient is listed twice")
    fractions = np.array(settings.fractions())
    classes = {True: [], False: []}
    for patient in sorted(patients, key=lambda p: p.patient_id):
        classes[patient.calcium].append(patient)
    counts = {c: len(members) for c, members in classes.items()}
    needed = len(SPLITS)
    if min(counts.values()) < needed:
        raise SplitError(
            f"every split ({', '.join(SPLITS)}) must hold patients with and without calcium: "
            f"at least {needed} patients with calcium and {needed} without are needed, and "
            f"{int(np.ceil(1 / fractions.min()))} of each for splits in proportion "
            f"({', '.join(f'{s} {f:g}' for s, f in zip(SPLITS, fractions, strict=True))}); "
            f"the cohort has {counts[True]} with calcium and {counts[False]} without "
            f"({len(patients)} patients with images)"
        )
    totals = largest_remainder(len(patients), fractions)
    quotas = _class_quotas([counts[True], counts[False]], fractions, totals)
    rng = np.random.default_rng(seed)
    split_of: dict[str, str] = {}
    for quota, calcium in zip(quotas, (True, False), strict=True):
        ordered = _stratified_order(classes[calcium], settings.risk_min_patients, rng)
        for patient, k in zip(ordered, _interleave(quota), strict=True):
            split_of[patient.patient_id] = SPLITS[k]
    return [
        {
            "patient_id": p.patient_id,
            "split": split_of[p.patient_id],
            "calcium": int(p.calcium),
            "risk_category": p.risk_category,
        }
        for p in sorted(patients, key=lambda p: p.patient_id)
    ]


def largest_remainder(n: int, fractions: np.ndarray) -> np.ndarray:
    """Integers adding up to n, each within one of n * fraction (Hamilton's method)."""
    ideal = n * np.asarray(fractions, dtype=float)
    counts = np.floor(ideal).astype(int)
    order = np.argsort(-(ideal - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _class_quotas(sizes: list[int], fractions: np.ndarray, totals: np.ndarray) -> list[np.ndarray]:
    """Per class, patients per split: each >= 1, adding up to the class size, and over the
    classes to `totals`; closest to proportional (floor or ceil of n_c f_k where possible)."""
    options = [_near_allocations(n, fractions) for n in sizes]
    best, best_cost = None, None
    for combo in itertools.product(*options):
        total = np.sum(combo, axis=0)
        cost = (
            np.abs(total - totals).sum(),
            sum(np.abs(a - n * fractions).max() for a, n in zip(combo, sizes, strict=True)),
        )
        if best_cost is None or cost < best_cost:
            best, best_cost = combo, cost
    return list(best)


def _near_allocations(n: int, fractions: np.ndarray) -> list[np.ndarray]:
    """Allocations of n patients near n * fractions with at least one per split."""
    ideal = n * fractions
    ranges = [range(max(1, int(np.floor(x)) - 1), int(np.ceil(x)) + 2) for x in ideal]
    found = [np.array(a) for a in itertools.product(*ranges) if sum(a) == n]
    return found or [largest_remainder(n, fractions)]


def _stratified_order(members: list[Patient], min_patients: int, rng) -> list[Patient]:
    by_risk: dict[str, list[Patient]] = {}
    for patient in members:
        by_risk.setdefault(patient.risk_category, []).append(patient)
    pooled = [p for group in by_risk.values() if len(group) < min_patients for p in group]
    strata = [g for _, g in sorted(by_risk.items()) if len(g) >= min_patients] + [pooled]
    ordered = []
    for stratum in strata:
        ordered += [stratum[i] for i in rng.permutation(len(stratum))]
    return ordered


def _interleave(quota: np.ndarray) -> list[int]:
    """Split indices for a sequence of sum(quota) patients, each split spread evenly."""
    n = int(quota.sum())
    dealt = np.zeros(len(quota), dtype=int)
    sequence = []
    for i in range(n):
        deficit = quota * (i + 1) / n - dealt
        deficit[dealt >= quota] = -np.inf
        k = int(np.argmax(deficit))
        dealt[k] += 1
        sequence.append(k)
    return sequence


def read_splits(rows: Iterable[Mapping]) -> dict[str, str]:
    """patient_id -> split, from the rows of ``results/splits/patients.tsv``."""
    split_of = {}
    for row in rows:
        if row["split"] not in SPLITS:
            raise SplitError(f"{row['patient_id']}: unknown split {row['split']!r}")
        split_of[str(row["patient_id"])] = row["split"]
    return split_of
