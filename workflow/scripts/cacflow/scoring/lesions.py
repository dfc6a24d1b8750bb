"""Lesion-level detection of calcium against a reference lesion map: which true lesions a
score found and which of its lesions are false. Lesions are the Agatston score's: 8-connected
components of one axial slice at >= 130 HU, at least 1 mm^2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cacflow.scoring.agatston import MIN_AREA_MM2, THRESHOLD_HU

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionDetection:
    true_lesions: int
    detected: int  # true lesions that a found lesion overlaps
    found_lesions: int
    false_positives: int  # found lesions that overlap no true lesion pixel


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
) -> LesionDetection:
    """Lesions of `hu` (slice x row x col) inside `found_region` (what a score kept) against
    those inside `true_region` (the reference's lesion pixels, e.g. coronary calcium)."""
    calcium = np.asarray(hu) >= THRESHOLD_HU
    found = calcium & np.asarray(found_region, bool)
    true = calcium & np.asarray(true_region, bool)
    area = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    counts = np.zeros(4, dtype=int)  # true, detected, found, false
    for k, ((true_labels, true_ids), (found_labels, found_ids)) in enumerate(
        zip(_lesions(true, area), _lesions(found, area), strict=True)
    ):
        counts[0] += true_ids.size
        counts[2] += found_ids.size
        if true_ids.size:
            hit = np.unique(true_labels[np.isin(found_labels, found_ids)])
            counts[1] += np.isin(true_ids, hit).sum()
        if found_ids.size:
            on_truth = np.unique(found_labels[true[k]])
            counts[3] += (~np.isin(found_ids, on_truth)).sum()
    return LesionDetection(*(int(c) for c in counts))
