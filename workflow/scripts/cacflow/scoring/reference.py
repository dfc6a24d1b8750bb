"""Reference lesions: a lesion map per patient and the reference scores computed from it.

One format serves the synthetic truth (`results/synthetic/truth/<patient>.npz`) and own
data's `lesions:` folder (what `cacflow convert` writes, `<patient>.npz`):

- ``lesion_labels``: slice x row x col, 0 = none, k = lesion k;
- ``lesion_artery``: per lesion id (index 0 is ""), one of `REFERENCE_ARTERIES`;
- ``pixel_spacing_mm``: (row, col);
- ``instance_numbers``: the DICOM InstanceNumber of each slice (when absent, the slices are
  those of the series sorted by InstanceNumber);
- optional: ``lesion_kind`` per lesion id ("coronary" unless given: a reference lesion map
  labels coronary calcium), ``heart_mask`` (the segmentation QC's Dice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cacflow.scoring.agatston import RISK_CATEGORIES, agatston_score, risk_category
from cacflow.scoring.arteries import ARTERIES
from cacflow.tables import read_tsv, save_npz

# The left main is scored with the LAD, as orCaScore's reference counts it.
REFERENCE_ARTERIES = ("LM", *ARTERIES)
SCORED_AS = {"LM": "LAD", **{artery: artery for artery in ARTERIES}}
REFERENCE_COLUMNS = (
    "patient_id",
    "agatston_total",
    *(f"agatston_{artery.lower()}" for artery in ARTERIES),  # LAD with the left main
    "agatston_lm",
    "volume_mm3",
    "risk_category",
    "n_lesions",
)
REQUIRED_REFERENCE_COLUMNS = ("patient_id", "agatston_total", "volume_mm3", "risk_category")


_MAP_KEYS = ("lesion_labels", "lesion_artery", "lesion_kind", "instance_numbers", "heart_mask")


class ReferenceError(ValueError):
    """A lesion map or reference table that cannot be used."""


@dataclass(frozen=True)
class LesionMap:
    """A patient's reference lesions in the volume's slice order."""

    lesion_labels: np.ndarray
    lesion_artery: np.ndarray
    lesion_kind: np.ndarray
    heart_mask: np.ndarray | None = None

    def coronary_mask(self) -> np.ndarray:
        coronary = np.array([kind == "coronary" for kind in self.lesion_kind], dtype=bool)
        coronary[0] = False
        return coronary[self.lesion_labels.astype(int)]


def read_lesion_map(
    path: Path, instance_numbers: np.ndarray, shape: tuple[int, ...] | None = None
) -> LesionMap:
    """The lesion map at `path` with its slices in the order of `instance_numbers` (the
    volume's); `shape`, when given, is the volume's, which the map must match."""
    path = Path(path)
    try:
        with np.load(path) as data:
            arrays = {key: data[key] for key in _MAP_KEYS if key in data.files}
    except (OSError, ValueError) as exc:
        raise ReferenceError(f"{path}: not a readable lesion map ({exc})") from exc
    for key in ("lesion_labels", "lesion_artery"):
        if key not in arrays:
            raise ReferenceError(f"{path}: lesion map lacks {key!r}")
    labels = arrays["lesion_labels"]
    n_ids = int(labels.max(initial=0)) + 1
    artery = np.asarray(arrays["lesion_artery"]).astype(str)
    if len(artery) < n_ids:
        raise ReferenceError(
            f"{path}: lesion_artery names {len(artery)} lesion ids, labels go up to {n_ids - 1}"
        )
    kind = np.asarray(arrays.get("lesion_kind", np.full(len(artery), "coronary"))).astype(str)
    instance_numbers = np.asarray(instance_numbers, dtype=int)
    own = arrays.get("instance_numbers")
    if own is None:
        if labels.shape[0] != len(instance_numbers):
            raise ReferenceError(
                f"{path}: {labels.shape[0]} label slices for a series of "
                f"{len(instance_numbers)} slices"
            )
        own = np.sort(instance_numbers)
    index = {int(n): k for k, n in enumerate(own)}
    missing = [int(n) for n in instance_numbers if int(n) not in index]
    if missing:
        raise ReferenceError(f"{path}: no label slice for instance numbers {missing[:5]}")
    order = np.array([index[int(n)] for n in instance_numbers], dtype=int)
    labels = labels[order]
    if shape is not None and labels.shape != tuple(shape):
        raise ReferenceError(f"{path}: label volume {labels.shape} differs from the image {shape}")
    heart = arrays.get("heart_mask")
    return LesionMap(labels, artery, kind, None if heart is None else heart[order])


def write_lesion_map(
    path: Path,
    lesion_labels: np.ndarray,
    lesion_artery: list[str] | np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    instance_numbers: np.ndarray,
) -> None:
    labelled = np.unique(lesion_labels)
    if labelled[-1] >= len(lesion_artery):
        raise ReferenceError(f"{path}: lesion {labelled[-1]} has no artery")
    unknown = sorted(
        {str(lesion_artery[k]) for k in labelled[labelled > 0]} - set(REFERENCE_ARTERIES)
    )
    if unknown:
        raise ReferenceError(f"{path}: unknown arteries {unknown}")
    save_npz(
        Path(path),
        lesion_labels=np.asarray(lesion_labels, dtype=np.int32),
        lesion_artery=np.asarray(lesion_artery, dtype=str),
        pixel_spacing_mm=np.asarray(pixel_spacing_mm, dtype=float),
        instance_numbers=np.asarray(instance_numbers, dtype=int),
    )


def reference_scores(
    hu: np.ndarray,
    lesion_labels: np.ndarray,
    lesion_artery: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
):
    """The Agatston score of the labelled lesions (the standard >= 130 HU, >= 1 mm^2 rules
    inside the labels), its row of `REFERENCE_COLUMNS` (without the patient) and the
    scored lesions."""
    result = agatston_score(
        hu, lesion_labels > 0, pixel_spacing_mm, slice_spacing_mm, lesion_labels=lesion_labels
    )
    by_artery = dict.fromkeys(REFERENCE_ARTERIES, 0.0)
    for label, score in result.score_by_label().items():
        by_artery[str(lesion_artery[label])] += score
    row = {
        "agatston_total": round(result.total, 3),
        **{
            f"agatston_{artery.lower()}": round(
                sum(s for a, s in by_artery.items() if SCORED_AS[a] == artery), 3
            )
            for artery in ARTERIES
        },
        "agatston_lm": round(by_artery["LM"], 3),
        "volume_mm3": round(result.volume_mm3, 3),
        "risk_category": risk_category(result.total),
        "n_lesions": len({lesion.label for lesion in result.lesions}),
    }
    return row, result


def read_reference_table(path: Path) -> list[dict]:
    """Rows of a reference table (`REFERENCE_COLUMNS`; the per-artery ones optional)."""
    rows = read_tsv(Path(path))
    if not rows:
        raise ReferenceError(f"{path}: the reference table is empty")
    missing = [c for c in REQUIRED_REFERENCE_COLUMNS if c not in rows[0]]
    if missing:
        raise ReferenceError(f"{path}: reference table lacks columns {missing}")
    seen = set()
    for row in rows:
        if row["patient_id"] in seen:
            raise ReferenceError(f"{path}: patient {row['patient_id']} appears twice")
        seen.add(row["patient_id"])
    return rows


# What the merged score table reads as the truth (the synthetic truth table's names).
TRUTH_TABLE_COLUMNS = (
    "patient_id",
    "agatston_total",
    *(f"agatston_{artery.lower()}" for artery in ARTERIES),
    "volume_mm3",
    "risk_category",
)


def reference_for_patients(rows: list[dict], keys: dict[str, str]) -> tuple[list[dict], int]:
    """The reference rows of the cohort's patients, under the workflow's IDs (`keys`: the
    table's ID -> the workflow's), in the workflow's order; and how many rows matched no
    patient. A missing per-artery score stays empty."""
    by_key = {str(row["patient_id"]): row for row in rows}
    out = []
    for key, patient_id in sorted(keys.items(), key=lambda item: item[1]):
        row = by_key.get(key)
        if row is None:
            continue
        for column in ("agatston_total", "volume_mm3"):
            try:
                float(row[column])
            except ValueError:
                raise ReferenceError(
                    f"reference table: patient {key}: {column} {row[column]!r} is not a number"
                ) from None
        category = str(row["risk_category"])
        if category not in RISK_CATEGORIES:
            raise ReferenceError(
                f"reference table: patient {key}: risk category {category!r} is not one of "
                f"{list(RISK_CATEGORIES)}"
            )
        out.append(
            {
                **{c: row.get(c, "") for c in TRUTH_TABLE_COLUMNS},
                "patient_id": patient_id,
                "risk_category": category,
            }
        )
    return out, len(set(by_key) - set(keys))
