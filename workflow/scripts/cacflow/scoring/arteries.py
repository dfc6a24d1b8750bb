"""Which coronary artery a lesion lies on: LAD (the left main counted with it, as orCaScore
labels it), LCX or RCA.

The arteries run in the grooves of the heart's surface: the LAD down the anterior
interventricular groove, the LCX round the left atrioventricular groove, the RCA round the
right one to the crux and on down the posterior interventricular groove (right dominance,
most people). So a lesion's angle round the heart's long axis says its artery. The axis is
the heart mask's principal axis (apex inferior); the angle is measured from anterior
towards the patient's right. Lesions near the left main's bifurcation, where the proximal
LAD and LCX lie side by side, are the ones this gets wrong.

Positions are in the patient's axes (x left, y posterior, z superior), from the series'
ImageOrientationPatient: a series whose rows or columns run the other way (a flipped
export) gets the same arteries. Slices run superior to inferior, as
`cacflow.imaging.volume.Volume` holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from cacflow.imaging.volume import STANDARD_AXIAL

ARTERIES = ("LAD", "LCX", "RCA")
ARTERY_COLUMNS = tuple(f"agatston_{artery.lower()}" for artery in ARTERIES)  # score tables
# Where each artery's sector starts, in degrees round the long axis from anterior towards
# the right (chosen on development seeds, docs/agatston.md): the RCA from just right of the
# anterior interventricular groove round to the crux, the LCX from the crux round the left
# side, the LAD over the front.
_SECTORS_DEG = ((10.0, "RCA"), (215.0, "LCX"), (335.0, "LAD"))
_MASK_STRIDE = 4  # in-plane subsampling of the mask for its axes


@dataclass(frozen=True)
class HeartAxes:
    """The heart mask's centre and axes in mm (x left, y posterior, z superior)."""

    centre: np.ndarray
    long_axis: np.ndarray  # base to apex
    anterior: np.ndarray
    right: np.ndarray  # long_axis x anterior
    orientation: tuple[float, ...] = STANDARD_AXIAL


def _position_mm(
    slice_index,
    row,
    col,
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
    orientation: tuple[float, ...] = STANDARD_AXIAL,
) -> np.ndarray:
    """Patient coordinates (mm, up to a shift) of voxel indices: along the row direction
    with the column index, the column direction with the row index, down with the slice."""
    along_row = np.asarray(orientation[:3], dtype=float)
    along_col = np.asarray(orientation[3:6], dtype=float)
    up = np.cross(along_row, along_col)
    up = up / np.linalg.norm(up) * (1.0 if up[2] >= 0 else -1.0)
    return (
        np.multiply.outer(np.asarray(col, dtype=float) * pixel_spacing_mm[1], along_row)
        + np.multiply.outer(np.asarray(row, dtype=float) * pixel_spacing_mm[0], along_col)
        - np.multiply.outer(np.asarray(slice_index, dtype=float) * slice_spacing_mm, up)
    )


def heart_axes(
    heart_mask: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
    orientation: tuple[float, ...] = STANDARD_AXIAL,
) -> HeartAxes | None:
    """The axes of a heart mask (slice x row x col); None for an empty mask."""
    k, r, c = np.nonzero(np.asarray(heart_mask, dtype=bool)[:, ::_MASK_STRIDE, ::_MASK_STRIDE])
    if len(k) < 3:
        return None
    points = _position_mm(
        k, r * _MASK_STRIDE, c * _MASK_STRIDE, pixel_spacing_mm, slice_spacing_mm, orientation
    )
    centre = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centre).T))
    long_axis = vectors[:, -1] if vectors[2, -1] < 0 else -vectors[:, -1]
    forward = np.array([0.0, -1.0, 0.0])
    anterior = forward - (forward @ long_axis) * long_axis
    anterior /= np.linalg.norm(anterior)
    return HeartAxes(centre, long_axis, anterior, np.cross(long_axis, anterior), tuple(orientation))


def artery_at(
    axes: HeartAxes,
    slice_index: float,
    row: float,
    col: float,
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
) -> str:
    """The artery whose sector round the long axis holds the point (slice, row, col)."""
    offset = (
        _position_mm(slice_index, row, col, pixel_spacing_mm, slice_spacing_mm, axes.orientation)
        - axes.centre
    )
    angle = float(np.degrees(np.arctan2(offset @ axes.right, offset @ axes.anterior)) % 360.0)
    artery = _SECTORS_DEG[-1][1]  # the LAD's sector wraps round 0
    for start, name in _SECTORS_DEG:
        if angle >= start:
            artery = name
    return artery


def score_by_artery(lesions: Iterable[Mapping]) -> dict[str, float]:
    """Agatston score per artery of lesion rows (`artery`, `score`; strings are fine)."""
    totals = dict.fromkeys(ARTERIES, 0.0)
    for lesion in lesions:
        totals[str(lesion["artery"])] += float(lesion["score"])
    return totals
