"""Agatston calcium scoring by the standard algorithm.

Source: Agatston et al., J Am Coll Cardiol 1990; the conventions of clinical software as
summarised in ../shared/reference.md:

- candidate pixels have HU >= 130 (at 120 kVp);
- a lesion is an 8-connected component within one axial slice, kept when its area is at
  least 1 mm^2;
- lesion score = area (mm^2) x density weight of its peak HU (130-199: 1, 200-299: 2,
  300-399: 3, >= 400: 4);
- the score is defined for 3 mm slices; other spacings are normalised by
  slice spacing / 3 mm (as DeepCAC, AI-CAC and van Velzen et al. do);
- volume = calcified pixels of kept lesions x pixel area x slice spacing (not normalised).

The functions take arrays, not files: the synthetic truth, the workflow's classical and
hybrid scorers and `cacflow predict` all call the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

THRESHOLD_HU = 130.0
MIN_AREA_MM2 = 1.0
REFERENCE_SPACING_MM = 3.0
RISK_CATEGORIES = ("0", "1-10", "11-100", "101-400", ">400")
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def density_weight(peak_hu: float) -> int:
    """Agatston density factor of a lesion from its peak HU (0 below the threshold)."""
    if peak_hu < THRESHOLD_HU:
        return 0
    if peak_hu < 200:
        return 1
    if peak_hu < 300:
        return 2
    if peak_hu < 400:
        return 3
    return 4


def risk_category(agatston_score: float) -> str:
    """Clinical risk category: 0, 1-10, 11-100, 101-400, >400.

    Scores are not integers once areas and spacing normalisation enter, so the upper
    bounds are inclusive (10.4 is still 1-10 after rounding to the nearest integer).
    """
    score = round(float(agatston_score))
    if agatston_score <= 0:
        return RISK_CATEGORIES[0]
    if score <= 10:
        return RISK_CATEGORIES[1]
    if score <= 100:
        return RISK_CATEGORIES[2]
    if score <= 400:
        return RISK_CATEGORIES[3]
    return RISK_CATEGORIES[4]


def cac_class(agatston_score: float) -> str:
    """The paper's low/high class of a patient: CAC score < 20 or >= 20."""
    return "high" if agatston_score >= 20 else "low"


@dataclass(frozen=True)
class Lesion2D:
    """One scored lesion: a connected component in one axial slice."""

    slice_index: int
    area_mm2: float
    peak_hu: float
    weight: int
    score: float  # area x weight x spacing normalisation
    n_pixels: int
    label: int  # majority id of `lesion_labels` under the component, 0 without labels
    centroid_row: float
    centroid_col: float


@dataclass(frozen=True)
class AgatstonResult:
    total: float
    volume_mm3: float
    lesions: tuple[Lesion2D, ...]

    @property
    def risk_category(self) -> str:
        return risk_category(self.total)

    def score_by_label(self) -> dict[int, float]:
        scores: dict[int, float] = {}
        for lesion in self.lesions:
            scores[lesion.label] = scores.get(lesion.label, 0.0) + lesion.score
        return scores

    def score_by_slice(self, n_slices: int) -> np.ndarray:
        per_slice = np.zeros(n_slices, dtype=float)
        for lesion in self.lesions:
            per_slice[lesion.slice_index] += lesion.score
        return per_slice


def agatston_score(
    hu: np.ndarray,
    region: np.ndarray | None,
    pixel_spacing_mm: tuple[float, float] | np.ndarray,
    slice_spacing_mm: float,
    lesion_labels: np.ndarray | None = None,
    threshold_hu: float = THRESHOLD_HU,
    min_area_mm2: float = MIN_AREA_MM2,
) -> AgatstonResult:
    """Score a volume (slice x row x col, HU) restricted to `region` (bool, same shape).

    `region` is where calcium may count: the heart mask for the classical score, the
    coronary lesion map for the synthetic truth, or None for the whole volume. With
    `lesion_labels`, each scored lesion records the label covering most of its pixels.
    """
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise ValueError(f"expected a 3-D volume (slice x row x col), got shape {hu.shape}")
    candidates = hu >= threshold_hu
    if region is not None:
        candidates &= np.asarray(region, dtype=bool)
    pixel_area_mm2 = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    normalisation = float(slice_spacing_mm) / REFERENCE_SPACING_MM

    lesions: list[Lesion2D] = []
    volume_mm3 = 0.0
    for slice_index in np.flatnonzero(candidates.any(axis=(1, 2))):
        components, n_components = ndimage.label(candidates[slice_index], _EIGHT_CONNECTED)
        ids = np.arange(1, n_components + 1)
        n_pixels = np.bincount(components.ravel(), minlength=n_components + 1)[1:]
        keep = n_pixels * pixel_area_mm2 >= min_area_mm2
        if not keep.any():
            continue
        ids, n_pixels = ids[keep], n_pixels[keep]
        peaks = ndimage.maximum(hu[slice_index], components, ids)
        centroids = ndimage.center_of_mass(candidates[slice_index], components, ids)
        majority = _majority_labels(components, ids, lesion_labels, slice_index)
        for comp_id, count, peak, centroid, label in zip(
            ids, n_pixels, peaks, centroids, majority, strict=True
        ):
            area = float(count) * pixel_area_mm2
            weight = density_weight(float(peak))
            lesions.append(
                Lesion2D(
                    slice_index=int(slice_index),
                    area_mm2=area,
                    peak_hu=float(peak),
                    weight=weight,
                    score=area * weight * normalisation,
                    n_pixels=int(count),
                    label=int(label),
                    centroid_row=float(centroid[0]),
                    centroid_col=float(centroid[1]),
                )
            )
            volume_mm3 += area * float(slice_spacing_mm)
    total = float(sum(lesion.score for lesion in lesions))
    return AgatstonResult(total=total, volume_mm3=volume_mm3, lesions=tuple(lesions))


def _majority_labels(
    components: np.ndarray,
    ids: np.ndarray,
    lesion_labels: np.ndarray | None,
    slice_index: int,
) -> list[int]:
    if lesion_labels is None:
        return [0] * len(ids)
    labels_here = lesion_labels[slice_index]
    majority = []
    for comp_id in ids:
        values, counts = np.unique(labels_here[components == comp_id], return_counts=True)
        majority.append(int(values[np.argmax(counts)]))
    return majority
