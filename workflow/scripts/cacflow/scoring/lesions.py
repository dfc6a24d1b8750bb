"""Lesion-level detection of calcium against a reference lesion map: which true lesions a
score found and which of its lesions are false, by count and by volume, as the orCaScore
challenge evaluates (Wolterink et al., Med Phys 2016). Lesions are the Agatston score's:
8-connected components of one axial slice at >= 130 HU, at least 1 mm^2; a lesion's volume
is its calcium pixels x pixel area x slice spacing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cacflow.scoring.agatston import MIN_AREA_MM2, THRESHOLD_HU
from cacflow.scoring.agreement import has_truth, icc_a1, weighted_kappa

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionDetection:
    true_lesions: int
    detected: int  # true lesions that a found lesion overlaps
    found_lesions: int
    false_positives: int  # found lesions that overlap no true lesion pixel
    true_volume_mm3: float = 0.0
    detected_volume_mm3: float = 0.0  # of the detected true lesions
    found_volume_mm3: float = 0.0
    false_volume_mm3: float = 0.0  # of the false positives


LESION_EVAL_COLUMNS = ("patient_id", "method", *LesionDetection.__dataclass_fields__)


def _lesions(mask: np.ndarray, pixel_area_mm2: float):
    """Per slice, (labels, ids of the components of at least MIN_AREA_MM2)."""
    for k in range(mask.shape[0]):
        labels, n = ndimage.label(mask[k], _EIGHT_CONNECTED)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        yield labels, np.flatnonzero(sizes * pixel_area_mm2 >= MIN_AREA_MM2) + 1


def lesion_detection(
    hu: np.ndarray,
    found_region: np.ndarray,
    true_region: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float = 3.0,
) -> LesionDetection:
    """Lesions of `hu` (slice x row x col) inside `found_region` (what a score kept) against
    those inside `true_region` (the reference's lesion pixels, e.g. coronary calcium)."""
    calcium = np.asarray(hu) >= THRESHOLD_HU
    found = calcium & np.asarray(found_region, bool)
    true = calcium & np.asarray(true_region, bool)
    area = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    counts = np.zeros(4, dtype=int)  # true, detected, found, false
    pixels = np.zeros(4, dtype=int)  # the same, in pixels
    for k, ((true_labels, true_ids), (found_labels, found_ids)) in enumerate(
        zip(_lesions(true, area), _lesions(found, area), strict=True)
    ):
        counts[0] += true_ids.size
        counts[2] += found_ids.size
        pixels[0] += np.isin(true_labels, true_ids).sum()
        pixels[2] += np.isin(found_labels, found_ids).sum()
        if true_ids.size:
            hit = np.unique(true_labels[np.isin(found_labels, found_ids)])
            detected = true_ids[np.isin(true_ids, hit)]
            counts[1] += detected.size
            pixels[1] += np.isin(true_labels, detected).sum()
        if found_ids.size:
            on_truth = np.unique(found_labels[true[k]])
            false = found_ids[~np.isin(found_ids, on_truth)]
            counts[3] += false.size
            pixels[3] += np.isin(found_labels, false).sum()
    voxel = area * float(slice_spacing_mm)
    return LesionDetection(*(int(c) for c in counts), *(float(n * voxel) for n in pixels))


def lesion_eval_row(patient_id: str, method: str, detection: LesionDetection) -> dict:
    """A `LESION_EVAL_COLUMNS` row."""
    values = {
        name: round(value, 3) if isinstance(value, float) else value
        for name, value in vars(detection).items()
    }
    return {"patient_id": patient_id, "method": method, **values}


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("nan")


def pooled_detection(rows: list[Mapping]) -> dict[str, float]:
    """Lesion-level sensitivity and positive predictive value, by count and by volume, and
    false-positive lesions per scan, over `LESION_EVAL_COLUMNS` rows (strings are fine)."""
    total = {
        name: sum(float(row[name]) for row in rows) for name in LesionDetection.__dataclass_fields__
    }
    return {
        "n_patients": len(rows),
        "true_lesions": int(total["true_lesions"]),
        "found_lesions": int(total["found_lesions"]),
        "sensitivity": _ratio(total["detected"], total["true_lesions"]),
        "ppv": _ratio(total["found_lesions"] - total["false_positives"], total["found_lesions"]),
        "sensitivity_volume": _ratio(total["detected_volume_mm3"], total["true_volume_mm3"]),
        "ppv_volume": _ratio(
            total["found_volume_mm3"] - total["false_volume_mm3"], total["found_volume_mm3"]
        ),
        "false_positives_per_scan": _ratio(total["false_positives"], len(rows)),
    }


LESIONS_EVAL_COLUMNS = (
    "method",
    "n_patients",
    "true_lesions",
    "found_lesions",
    "sensitivity",
    "ppv",
    "sensitivity_volume",
    "ppv_volume",
    "false_positives_per_scan",
    "icc_agatston",
    "icc_volume",
    "kappa_linear",
)


def lesion_evaluation(eval_rows: Iterable[Mapping], score_rows: Iterable[Mapping]) -> list[dict]:
    """orCaScore's evaluation per method with a lesion-level reference: `pooled_detection`
    of its `LESION_EVAL_COLUMNS` rows, and ICC(A,1) on Agatston and volume and linear kappa
    on the risk categories of the same patients in a merged scores table
    (`cacflow.scoring.scoring.MERGED_COLUMNS`)."""
    by_method: dict[str, list[Mapping]] = {}
    for row in eval_rows:
        by_method.setdefault(str(row["method"]), []).append(row)
    scores = {(str(r["method"]), str(r["patient_id"])): r for r in score_rows if has_truth(r)}
    out = []
    for method, rows in by_method.items():
        scored = [scores[(method, str(r["patient_id"]))] for r in rows]
        pair = {
            key: np.column_stack(
                [[float(r[key]) for r in scored], [float(r[f"truth_{key}"]) for r in scored]]
            )
            for key in ("agatston", "volume_mm3")
        }
        kappa = weighted_kappa(
            [str(r["risk_category"]) for r in scored],
            [str(r["truth_risk_category"]) for r in scored],
        )
        values = {
            **pooled_detection(rows),
            "icc_agatston": icc_a1(pair["agatston"]),
            "icc_volume": icc_a1(pair["volume_mm3"]),
            "kappa_linear": kappa,
        }
        out.append(
            {
                "method": method,
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()},
            }
        )
    return out
