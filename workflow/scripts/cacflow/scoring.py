"""Agatston scores per patient: classical (the standard algorithm inside the heart mask) and
hybrid (the classical lesions that a CNN's images call calcium), and the merged table.

Classical: `cacflow.agatston.agatston_score` (HU >= 130, 8-connected 2-D lesions >= 1 mm^2,
density weights 1-4, score x slice spacing / 3 mm) on the ingested HU volume restricted to
the heart mask of `cacflow.segmentation`. It counts everything of >= 130 HU inside that
mask: aortic wall, aortic valve and mitral annulus calcium (the mask holds the aortic
root), rib or costal cartilage the mask takes in, and noise on dense tissue; clinical
software asks a reader to click such lesions away. benchmarks/agatston_agreement.py
measures how much each adds on the synthetic cohort.

Each scored lesion is listed with the images of the datasets that show it, in the
manifests' coordinates (`cacflow.datasets`): its slice is the DICOM instance number (the
manifests' ``slice``), whole-slice images are tile 0, and its cropped tiles are those of the
3x3 grid over `heart_box` (`tile_boxes`, numbered 1..grid^2 row-major) that hold at least
one of its pixels. Every lesion pixel is inside the heart mask, so the segmented image and
the listed tiles show it.

Hybrid (ours: Lee et al. 2021 classify images but give no score): the classifier stands in
for the reader who removes non-coronary candidates. A lesion counts when at least one image
that shows it (its slice's original or segmented image, or one of its tiles) has a
predicted calcium probability >= the threshold; images without a prediction count as not
calcium.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .agatston import MIN_AREA_MM2, THRESHOLD_HU, agatston_score, risk_category
from .datasets import heart_box, tile_boxes
from .ingest import Volume
from .tables import read_tsv

CLASSICAL = "classical"
PATIENT_COLUMNS = ("patient_id", "method", "agatston", "volume_mm3", "risk_category", "n_lesions")
TRUTH_COLUMNS = ("truth_agatston", "truth_volume_mm3", "truth_risk_category")
MERGED_COLUMNS = PATIENT_COLUMNS + TRUTH_COLUMNS
LESION_COLUMNS = (
    "patient_id",
    "slice",  # DICOM instance number, as in the dataset manifests
    "slice_index",  # position in the volume (superior to inferior)
    "centroid_row",
    "centroid_col",
    "area_mm2",
    "peak_hu",
    "weight",
    "score",
    "volume_mm3",
    "tiles",  # cropped tiles holding lesion pixels, comma-separated (1..grid^2)
)
DEFAULT_HYBRID_THRESHOLD = 0.5
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # as cacflow.agatston


class ScoringError(ValueError):
    """Inputs that cannot be scored together (shapes, slice order, table columns)."""


@dataclass(frozen=True)
class PatientScore:
    """A patient's row of the scores table and the rows of its scored lesions."""

    row: dict
    lesions: list[dict]


def patient_row(
    patient_id: str, method: str, agatston: float, volume_mm3: float, n_lesions: int
) -> dict:
    return {
        "patient_id": patient_id,
        "method": method,
        "agatston": round(float(agatston), 3),
        "volume_mm3": round(float(volume_mm3), 3),
        "risk_category": risk_category(agatston),
        "n_lesions": int(n_lesions),
    }


def classical_score(
    patient_id: str,
    hu: np.ndarray,
    heart_mask: np.ndarray,
    instance_numbers: Sequence[int],
    pixel_spacing_mm: tuple[float, float],
    slice_spacing_mm: float,
    grid: int = 3,
) -> PatientScore:
    """Agatston score of the calcium inside `heart_mask` (slice x row x col, as `hu`), with
    the lesions and the cropped tiles (`grid` x `grid`) that show them."""
    hu = np.asarray(hu)
    heart_mask = np.asarray(heart_mask, dtype=bool)
    if hu.ndim != 3 or heart_mask.shape != hu.shape:
        raise ScoringError(
            f"{patient_id}: heart mask shape {heart_mask.shape} differs from HU {hu.shape}"
        )
    if len(instance_numbers) != hu.shape[0]:
        raise ScoringError(
            f"{patient_id}: {len(instance_numbers)} instance numbers for {hu.shape[0]} slices"
        )
    result = agatston_score(hu, heart_mask, pixel_spacing_mm, slice_spacing_mm)
    by_slice: dict[int, list] = defaultdict(list)
    for lesion in result.lesions:
        by_slice[lesion.slice_index].append(lesion)

    pixel_area_mm2 = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    rows = []
    for k, lesions in sorted(by_slice.items()):
        pixels = _lesion_pixels(hu[k], heart_mask[k], pixel_area_mm2)
        if [len(p[0]) for p in pixels] != [lesion.n_pixels for lesion in lesions]:
            raise ScoringError(f"{patient_id}: slice {k}: lesions do not match their pixels")
        box = heart_box(heart_mask[k], grid)
        tiles = tile_boxes(box, grid)
        for lesion, (r, c) in zip(lesions, pixels, strict=True):
            shown = [
                n
                for n, (r0, r1, c0, c1) in enumerate(tiles, start=1)
                if np.any((r >= r0) & (r < r1) & (c >= c0) & (c < c1))
            ]
            rows.append(
                {
                    "patient_id": patient_id,
                    "slice": int(instance_numbers[k]),
                    "slice_index": k,
                    "centroid_row": round(lesion.centroid_row, 2),
                    "centroid_col": round(lesion.centroid_col, 2),
                    "area_mm2": round(lesion.area_mm2, 4),
                    "peak_hu": round(lesion.peak_hu, 1),
                    "weight": lesion.weight,
                    "score": round(lesion.score, 4),
                    "volume_mm3": round(lesion.area_mm2 * float(slice_spacing_mm), 4),
                    "tiles": ",".join(map(str, shown)),
                }
            )
    row = patient_row(patient_id, CLASSICAL, result.total, result.volume_mm3, len(result.lesions))
    return PatientScore(row, rows)


def _lesion_pixels(
    hu_slice: np.ndarray, mask_slice: np.ndarray, pixel_area_mm2: float
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rows, cols) of each lesion of a slice, in the order `agatston_score` lists them
    (component id order of the same 8-connected labelling)."""
    candidates = (hu_slice >= THRESHOLD_HU) & mask_slice
    components, _ = ndimage.label(candidates, _EIGHT_CONNECTED)
    found = ndimage.find_objects(components)
    pixels = []
    for comp_id, where in enumerate(found, start=1):
        if where is None:
            continue
        r, c = np.nonzero(components[where] == comp_id)
        if len(r) * pixel_area_mm2 >= MIN_AREA_MM2:
            pixels.append((r + where[0].start, c + where[1].start))
    return pixels


def score_volume(
    patient_id: str,
    volume: Volume | None,
    heart_mask: np.ndarray,
    mask_instance_numbers: Sequence[int],
    grid: int = 3,
) -> PatientScore | None:
    """Classical score of an ingested volume (`cacflow.ingest.load_volume`) with its
    segmentation (`cacflow.pipeline.load_segmentation`); None for a refused study."""
    if volume is None:
        return None
    if [int(n) for n in mask_instance_numbers] != [int(n) for n in volume.instance_numbers]:
        raise ScoringError(
            f"{patient_id}: the segmentation's slices (instance numbers) differ from the volume's"
        )
    return classical_score(
        patient_id,
        volume.hu,
        heart_mask,
        volume.instance_numbers,
        volume.pixel_spacing_mm,
        volume.slice_spacing_mm,
        grid,
    )


# Hybrid ---------------------------------------------------------------------------------
def _image_key(row: Mapping) -> tuple[str, int, int]:
    tile = str(row.get("tile", "") or "").strip()
    return str(row["patient_id"]), int(row["slice"]), int(tile) if tile else 0


def hybrid_scores(
    lesion_rows: Iterable[Mapping],
    predictions: Iterable[Mapping],
    method: str,
    threshold: float = DEFAULT_HYBRID_THRESHOLD,
) -> list[dict]:
    """Per patient with predictions, the score of the classical lesions that an image called
    calcium shows.

    `lesion_rows`: `LESION_COLUMNS` rows (as read from the lesion tables: strings are fine).
    `predictions`: rows (patient_id, slice, tile, probability) of one classifier on one
    dataset; tile is 0 or "" for whole-slice images. Rows are sorted by patient_id."""
    probability: dict[tuple[str, int, int], float] = {}
    for row in predictions:
        key = _image_key(row)
        probability[key] = max(probability.get(key, 0.0), float(row["probability"]))
    patients = sorted({key[0] for key in probability})
    by_patient: dict[str, list[Mapping]] = defaultdict(list)
    for lesion in lesion_rows:
        by_patient[str(lesion["patient_id"])].append(lesion)

    rows = []
    for patient_id in patients:
        total = volume = 0.0
        kept = 0
        for lesion in by_patient[patient_id]:
            instance = int(lesion["slice"])
            tiles = [int(t) for t in str(lesion["tiles"] or "").split(",") if t.strip()]
            images = [(patient_id, instance, tile) for tile in (0, *tiles)]
            if any(probability.get(image, -1.0) >= threshold for image in images):
                total += float(lesion["score"])
                volume += float(lesion["volume_mm3"])
                kept += 1
        rows.append(patient_row(patient_id, method, total, volume, kept))
    return rows


# The merged table -----------------------------------------------------------------------
def merge_scores(tables: Iterable[Path], truth_rows: Iterable[Mapping] | None = None) -> list[dict]:
    """Rows of `PATIENT_COLUMNS` tables (classical per patient, hybrid per method...) in the
    order given, with the synthetic truth (`agatston_total`, `volume_mm3`, `risk_category`
    of truth/patients.tsv) as `TRUTH_COLUMNS`, empty when unknown."""
    truth = {}
    for row in truth_rows or ():
        truth[str(row["patient_id"])] = {
            "truth_agatston": row["agatston_total"],
            "truth_volume_mm3": row["volume_mm3"],
            "truth_risk_category": row["risk_category"],
        }
    merged = []
    for path in tables:
        for row in read_tsv(Path(path)):
            missing = [c for c in PATIENT_COLUMNS if c not in row]
            if missing:
                raise ScoringError(f"{path}: score table lacks columns {missing}")
            known = truth.get(row["patient_id"], dict.fromkeys(TRUTH_COLUMNS, ""))
            merged.append({**{c: row[c] for c in PATIENT_COLUMNS}, **known})
    return merged
