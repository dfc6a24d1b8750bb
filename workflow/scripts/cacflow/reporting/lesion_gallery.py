"""A patient's candidate lesions, one crop each, so that a reader can check the classical score
the way a clinician checks software: the lesion outlined (green kept, red rejected), the
heart mask's edge, and the rule that rejected it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage

from cacflow.reporting.plotting import save_figure
from cacflow.scoring.agatston import THRESHOLD_HU, Lesion2D
from cacflow.scoring.scoring import Candidate

CROP_MM = 40.0
COLUMNS = 6
# A calcium window: soft tissue grey, calcium bright but not flat white.
WINDOW_HU = (-200.0, 1000.0)
KEPT, REJECTED = "#2ca02c", "#d62728"


def _crop(
    shape: tuple[int, int], centre: tuple[float, float], half_px: tuple[int, int]
) -> tuple[slice, slice]:
    rows, cols = shape
    r, c = round(centre[0]), round(centre[1])
    return (
        slice(max(r - half_px[0], 0), min(r + half_px[0] + 1, rows)),
        slice(max(c - half_px[1], 0), min(c + half_px[1] + 1, cols)),
    )


def _lesion_in_crop(calcium: np.ndarray, lesion: Lesion2D, box: tuple[slice, slice]):
    """The lesion's own pixels in a crop: the calcium component nearest its centroid (other
    calcium in the crop stays unmarked)."""
    labels, n = ndimage.label(calcium, np.ones((3, 3), bool))
    if n == 0:
        return calcium
    rows, cols = np.nonzero(labels)
    centre = (lesion.centroid_row - box[0].start, lesion.centroid_col - box[1].start)
    nearest = np.argmin((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2)
    return labels == labels[rows[nearest], cols[nearest]]


def draw_lesion_gallery(
    hu: np.ndarray,
    heart_mask: np.ndarray,
    candidates: Sequence[Candidate],
    pixel_spacing_mm: tuple[float, float],
    instance_numbers: Sequence[int],
    out_png: Path,
    title: str,
    max_lesions: int = 48,
) -> None:
    """The gallery of `candidates` (the largest scores first, at most `max_lesions`) of a
    volume (slice x row x col, HU) and its heart mask, written to `out_png`."""
    shown = sorted(candidates, key=lambda c: -c.lesion.score)[:max_lesions]
    rows = max(1, -(-len(shown) // COLUMNS))
    fig, axes = plt.subplots(
        rows, COLUMNS, figsize=(2.0 * COLUMNS, 2.25 * rows + 0.6), squeeze=False
    )
    half_px = tuple(int(CROP_MM / 2 / float(s)) for s in pixel_spacing_mm)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, candidate in zip(axes.ravel(), shown, strict=False):
        lesion, outcome = candidate.lesion, candidate.outcome
        k = lesion.slice_index
        box = _crop(hu.shape[1:], (lesion.centroid_row, lesion.centroid_col), half_px)
        ax.imshow(hu[k][box], cmap="gray", vmin=WINDOW_HU[0], vmax=WINDOW_HU[1])
        if heart_mask[k][box].any() and not heart_mask[k][box].all():
            ax.contour(heart_mask[k][box], levels=[0.5], colors="#1f77b4", linewidths=0.8)
        colour = KEPT if outcome == "kept" else REJECTED
        mine = _lesion_in_crop(hu[k][box] >= THRESHOLD_HU, lesion, box)
        if mine.any():
            ax.contour(mine, levels=[0.5], colors=colour, linewidths=0.8)
        verdict = "kept" if outcome == "kept" else f"rejected: {outcome}"
        ax.set_title(
            f"slice {instance_numbers[k]}, score {lesion.score:.1f}\n{verdict}",
            fontsize=8,
            color=colour,
        )
    if not shown:
        axes[0, 0].text(0, 0.5, "no candidate lesion (>= 130 HU, >= 1 mm^2) in the heart mask")
    kept = sum(c.outcome == "kept" for c in candidates)
    more = f"; the {max_lesions} largest shown" if len(candidates) > max_lesions else ""
    fig.suptitle(
        f"{title}: {len(candidates)} candidate lesions, {kept} kept{more} "
        f"(crops of {CROP_MM:g} mm; blue: the heart mask's edge)",
        fontsize=9,
    )
    fig.tight_layout()
    save_figure(fig, Path(out_png))
