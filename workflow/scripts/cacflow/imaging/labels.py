"""Image labels: whole slices from the user's label table, tiles from the qualifying
coronary lesions they show.

A tile is ``calcium`` when it shows at least ``min_area_mm2`` (1 mm^2, the Agatston minimum)
of qualifying coronary lesions: 2-D 8-connected components of (lesion map & HU >= 130) with
an area >= 1 mm^2 over the whole slice, the standard Agatston lesion
(``cacflow.scoring.agatston``). Assumptions:

- only lesion pixels inside the heart mask count, because the rest is black in the image;
  the 1 mm^2 rule applies to the whole component before it is cut by the mask and the grid,
  and again to what the tile shows of it: a sliver that the grid cuts off a lesion is
  ``no_calcium``, as augmentation labels an image that keeps less than that in view
  (``cacflow.learning.augment``);
- a tile's Agatston score is, over the lesions it shows, (lesion pixels in the tile x pixel
  area) x the density weight of the lesion's peak HU x slice spacing / 3 mm; the weight is a
  property of the whole lesion, so the tile scores of a slice add up to its score. The
  tile's class is ``low`` below 20 and ``high`` from 20 (the paper's patient classes);
- without a lesion map (user data) the candidates are components of HU >= 130 inside the
  heart mask (area >= 1 mm^2), looked for only on slices the label table marks calcium:
  tiles of other slices are ``no_calcium`` by the label table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cacflow.imaging import DatasetError
from cacflow.imaging.geometry import cut
from cacflow.scoring.agatston import MIN_AREA_MM2, cac_class, density_weight

CALCIUM, NO_CALCIUM = "calcium", "no_calcium"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class SliceLabel:
    """A row of the user's label table: is there calcium, and the class (low/high/"")."""

    calcium: bool
    cac_class: str = ""

    def __post_init__(self) -> None:
        if self.cac_class not in ("low", "high", ""):
            raise DatasetError(f"cac_class must be 'low', 'high' or '', got {self.cac_class!r}")


# The label of every slice when no label table is given (labels left empty).
UNLABELLED = SliceLabel(False, "")


def slice_labels_from_table(rows: Iterable[Mapping], patient_id: str) -> dict[int, SliceLabel]:
    """Instance number -> label, from label-table rows (patient_id, instance_number,
    calcium 0/1, cac_class), as ``labels.tsv`` of the synthetic cohort has them."""
    labels: dict[int, SliceLabel] = {}
    for row in rows:
        if str(row["patient_id"]) != patient_id:
            continue
        try:
            instance = int(row["instance_number"])
        except (TypeError, ValueError):
            raise DatasetError(
                f"{patient_id}: instance number {row['instance_number']!r} is not an integer"
            ) from None
        if instance in labels:
            raise DatasetError(f"{patient_id}: instance {instance} twice in the label table")
        calcium = _TRUTH_VALUES.get(str(row["calcium"]).strip().lower())
        if calcium is None:
            raise DatasetError(
                f"{patient_id}: instance {instance}: calcium must be 0 or 1, got {row['calcium']!r}"
            )
        labels[instance] = SliceLabel(calcium, str(row.get("cac_class") or ""))
    return labels


_TRUTH_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def lesion_weights(
    candidates: np.ndarray, hu: np.ndarray, pixel_area_mm2: float
) -> np.ndarray | None:
    """Per pixel, the density weight of the qualifying lesion it belongs to (0 elsewhere).

    Lesions are 8-connected components of `candidates` (one slice) with an area of at
    least 1 mm^2; the weight comes from the component's peak HU. None when none qualify.
    """
    components, n_components = ndimage.label(candidates, _EIGHT_CONNECTED)
    if n_components == 0:
        return None
    # Per-component area and peak HU from the candidate pixels only (few), not the slice.
    ids = components[candidates]
    areas = np.bincount(ids, minlength=n_components + 1) * pixel_area_mm2
    peaks = np.full(n_components + 1, -np.inf)
    np.maximum.at(peaks, ids, hu[candidates])
    weights = np.zeros(n_components + 1, dtype=np.uint8)
    for comp_id in np.flatnonzero(areas >= MIN_AREA_MM2):
        if comp_id:
            weights[comp_id] = density_weight(float(peaks[comp_id]))
    if not weights.any():
        return None
    return weights[components]


def tile_label(
    weights: np.ndarray | None,
    box: tuple[int, int, int, int],
    pixel_area_mm2: float,
    score_per_weight: float,
    min_area_mm2: float = MIN_AREA_MM2,
) -> tuple[str, str]:
    """(label, cac_class) of a tile from the lesion-weight map of its slice: calcium when
    its lesion pixels cover at least `min_area_mm2` (0: any lesion pixel)."""
    if weights is None:
        return NO_CALCIUM, ""
    inside = cut(weights, box)
    n_lesion = np.count_nonzero(inside)
    if not n_lesion or n_lesion * pixel_area_mm2 < min_area_mm2:
        return NO_CALCIUM, ""
    score = float(inside.sum(dtype=np.int64)) * score_per_weight
    return CALCIUM, cac_class(score)
