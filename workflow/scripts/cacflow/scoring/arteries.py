"""Which coronary artery a lesion lies on: LAD (the left main counted with it, as orCaScore
labels it), LCX or RCA.

The arteries run in the grooves of the heart's surface: the LAD down the anterior
interventricular groove, the LCX round the left atrioventricular groove, the RCA round the
right one to the crux and on down the posterior interventricular groove (right dominance,
most people). So a lesion's angle round the heart's long axis says its artery. The axis is
the heart mask's principal axis (apex inferior); the angle is measured from anterior
towards the patient's right.

Near the left main's bifurcation the proximal LAD and LCX lie side by side, and where the
bifurcation lies round the groove differs from patient to patient by more than the two
arteries' distance there. So the LAD/LCX boundary is set per patient where the LAD shows
its course: the LAD runs from the bifurcation down its groove at a nearly constant angle,
while the LCX stays in the AV groove at the heart's base. Lesions over the front and left
of the heart (from 35 deg behind the LAD's sector to the RCA's) lying below the base, at
most 20 mm above the heart's centre along the long axis, mark that course, wherever the
LAD runs within that window; every left-sided lesion more than a few degrees behind it is
the LCX's, the others the LAD's (left main and proximal LAD). A patient without such
lesions keeps the fixed boundary.

Positions are in the patient's axes (x left, y posterior, z superior), from the series'
ImageOrientationPatient: a series whose rows or columns run the other way (a flipped
export) gets the same arteries. Slices run superior to inferior, as
`cacflow.imaging.volume.Volume` holds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
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
# The LAD's course (chosen on development seeds, docs/agatston.md): left-sided lesions from
# this far behind the LAD's sector, at most this far above the heart's centre along the long
# axis (below the AV groove, where the LCX runs); the LCX's lesions lie behind their
# score-weighted mean angle by more than the margin.
_LAD_COURSE_WINDOW_DEG = 35.0
_LAD_COURSE_ABOVE_CENTRE_MM = 20.0
_LAD_COURSE_MARGIN_DEG = 6.0


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


def _sector(angle_deg: float) -> str:
    """The artery of the fixed sector holding an angle."""
    artery = _SECTORS_DEG[-1][1]  # the LAD's sector wraps round 0
    for start, name in _SECTORS_DEG:
        if angle_deg >= start:
            artery = name
    return artery


def lesion_arteries(
    axes: HeartAxes,
    positions: Sequence[tuple[float, float, float]],
    scores: Sequence[float],
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
    lad_course: bool = True,
) -> list[str]:
    """The artery of each of one patient's lesions, at `positions` (slice, row, col) with
    Agatston `scores` (the weights of the LAD's course), as the module docstring says;
    `lad_course=False`: by the fixed sectors alone."""
    if not len(positions):
        return []
    k, row, col = np.asarray(positions, dtype=float).T
    offset = (
        _position_mm(k, row, col, pixel_spacing_mm, slice_spacing_mm, axes.orientation)
        - axes.centre
    )
    angle = np.degrees(np.arctan2(offset @ axes.right, offset @ axes.anterior)) % 360.0
    toward_apex_mm = offset @ axes.long_axis
    arteries = [_sector(float(a)) for a in angle]
    left = np.array([artery != "RCA" for artery in arteries])
    lcx_start, lad_start = _SECTORS_DEG[1][0], _SECTORS_DEG[2][0]
    unwrapped = np.where(angle < lcx_start, angle + 360.0, angle)  # left side: 215-370 deg
    course = (
        lad_course
        & left
        & (unwrapped >= lad_start - _LAD_COURSE_WINDOW_DEG)
        & (toward_apex_mm >= -_LAD_COURSE_ABOVE_CENTRE_MM)
    )
    weights = np.asarray(scores, dtype=float)[course]
    if weights.sum() > 0:
        boundary = np.average(unwrapped[course], weights=weights) - _LAD_COURSE_MARGIN_DEG
        for i in np.flatnonzero(left):
            arteries[i] = "LCX" if unwrapped[i] < boundary else "LAD"
    return arteries


def score_by_artery(lesions: Iterable[Mapping]) -> dict[str, float]:
    """Agatston score per artery of lesion rows (`artery`, `score`; strings are fine)."""
    totals = dict.fromkeys(ARTERIES, 0.0)
    for lesion in lesions:
        totals[str(lesion["artery"])] += float(lesion["score"])
    return totals
