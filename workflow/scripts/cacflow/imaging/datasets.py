"""The three image datasets of Lee et al. (Sensors 2021, 21, 7059) for one patient.

Per axial slice, from HU and heart-mask arrays already in memory:

- ``original``: the whole slice, windowed to 8 bits, at full size;
- ``segmented``: heart pixels only (the rest black), cropped to the bounding box of the
  slice's heart mask, made square by padding the shorter side symmetrically (black where
  the square passes the image edge) and resized to ``segmented_size``;
- ``cropped``: the same square split into a ``grid`` x ``grid`` grid at native resolution,
  each tile resized to ``tile_size``; tiles are numbered 1..grid^2 row-major. With
  ``cropped_context: box`` the tiles keep the slice's pixels outside the heart mask.

With ``slab: 3`` every image is RGB: the slice above, the slice and the slice below
(head first, the order of `cacflow.imaging.volume.Volume`) as its three channels, all three
cut with the slice's box and, where its images are masked, its heart mask (the first and
last slices repeat themselves). A network then sees whether a bright spot continues along
the scan axis, as a radiologist scrolls through neighbouring slices. Labels, lesion masks
and ``candidate_mm2`` stay the slice's own. The neighbours lie one slice spacing away,
whatever that is: a model trained on 3 mm slices sees 2.5 mm neighbours as nearer.

Slices with an empty heart mask are dropped from ``segmented`` and ``cropped`` (the paper
drops black segmentations) and counted.

Labels. Whole slices (original, segmented) take the calcium label of the user's label
table; a tile is ``calcium`` when it shows pixels of a qualifying coronary lesion (the rule
and its assumptions: ``cacflow.imaging.labels``).

``candidate_mm2`` is the area of calcium candidates an image shows, whatever its label:
HU >= 130 inside the heart mask, in components of at least 1 mm^2 (what the standard
Agatston algorithm counts). On a ``no_calcium`` image it is calcium that is not coronary
(aortic wall or valve, mitral annulus) or noise: the hard negatives of training
(``cacflow.learning.inputs``).

Geometry is recorded in the manifests as half-open boxes ``[row0, row1) x [col0, col1)`` in
the pixel coordinates of the original slice (they may extend past its edges), so Grad-CAM
and prediction can map an image back onto the slice: pixel (r, c) of the slice lies at
``((r - row0 + 0.5) * size / (row1 - row0) - 0.5, ...)`` of the resized image.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cacflow import settings_from_config
from cacflow.imaging import DatasetError
from cacflow.imaging.geometry import cut, heart_box, resized, tile_boxes
from cacflow.imaging.labels import (
    CALCIUM,
    NO_CALCIUM,
    UNLABELLED,
    SliceLabel,
    lesion_weights,
    tile_label,
)
from cacflow.imaging.png import png_bytes
from cacflow.imaging.volume import Volume
from cacflow.imaging.windowing import window_to_uint8
from cacflow.scoring.agatston import MIN_AREA_MM2, REFERENCE_SPACING_MM, THRESHOLD_HU
from cacflow.tables import read_tsv, tsv_columns, write_tsv

DATASETS = ("original", "segmented", "cropped")
MANIFEST_COLUMNS = (
    "patient_id",
    "slice",
    "tile",
    "path",
    "label",
    "cac_class",
    "label_source",
    "row0",
    "row1",
    "col0",
    "col1",
    "pixel_mm",
    "lesion_mask",
    "candidate_mm2",
)


CROPPED_CONTEXTS = ("heart", "box")
SLABS = (1, 3)  # slices per image: the slice alone, or with its neighbours as channels


@dataclass(frozen=True)
class DatasetSettings:
    """How images are made; fed from the workflow's ``datasets:`` config section."""

    window_center_hu: float = 150.0
    window_width_hu: float = 800.0
    segmented_size: int = 299
    tile_size: int = 299
    grid: int = 3
    min_tile_lesion_area_mm2: float = MIN_AREA_MM2  # what a calcium tile must show
    # What the tiles show around the heart: "heart", the segmented image's pixels (the
    # paper: black outside the mask), or "box", the whole slice within the heart box, so the
    # aortic wall, fat and lung next to a candidate are in view.
    cropped_context: str = "heart"
    slab: int = 1  # slices per image (`SLABS`): 3 stacks the neighbours as channels
    png_compress_level: int = 1  # zlib level of `png_bytes`: 0 stores, 1-9 compress

    def __post_init__(self) -> None:
        if self.window_width_hu <= 0:
            raise DatasetError(f"window_width_hu must be positive, got {self.window_width_hu}")
        if self.grid < 1 or self.segmented_size < 1 or self.tile_size < 1:
            raise DatasetError(f"grid and image sizes must be >= 1: {self}")
        if self.min_tile_lesion_area_mm2 < 0:
            raise DatasetError(
                f"min_tile_lesion_area_mm2 must be >= 0, got {self.min_tile_lesion_area_mm2}"
            )
        if self.cropped_context not in CROPPED_CONTEXTS:
            raise DatasetError(
                f"cropped_context must be one of {CROPPED_CONTEXTS}, got {self.cropped_context!r}"
            )
        if self.slab not in SLABS:
            raise DatasetError(f"slab must be one of {SLABS} slices, got {self.slab!r}")
        if not 0 <= self.png_compress_level <= 9:
            raise DatasetError(f"png_compress_level must be 0..9, got {self.png_compress_level}")

    @classmethod
    def from_config(cls, config: Mapping) -> DatasetSettings:
        """From the ``datasets:`` config section; unknown keys are ignored."""
        return settings_from_config(cls, config)


@dataclass(frozen=True)
class PatientDatasets:
    """What `build_patient_datasets` wrote: manifest rows per dataset and counts."""

    patient_id: str
    rows: dict[str, list[dict]]
    manifests: dict[str, Path]
    n_slices: int
    n_empty_mask_dropped: int
    n_calcium_slices: int  # by the label table
    n_calcium_slices_dropped: int  # calcium by the label table, but an empty heart mask
    n_calcium_slices_without_positive_tile: int  # kept, calcium by the table, no calcium tile
    n_calcium_tiles: int

    def counts(self) -> dict[str, int | str]:
        """One QC row."""
        return {
            "patient_id": self.patient_id,
            "n_slices": self.n_slices,
            "n_empty_mask_dropped": self.n_empty_mask_dropped,
            "n_calcium_slices": self.n_calcium_slices,
            "n_calcium_slices_dropped": self.n_calcium_slices_dropped,
            "n_calcium_slices_without_positive_tile": self.n_calcium_slices_without_positive_tile,
            "n_calcium_tiles": self.n_calcium_tiles,
            **{f"n_{name}": len(rows) for name, rows in self.rows.items()},
        }


# ---------------------------------------------------------------------------------------
# One patient


def build_patient_datasets(
    out_root: Path,
    patient_id: str,
    volume: Volume,
    heart_mask: np.ndarray,
    slice_labels: Mapping[int, SliceLabel] | None,
    lesion_mask: np.ndarray | None,
    settings: DatasetSettings,
) -> PatientDatasets:
    """Write a patient's original, segmented and cropped PNGs and per-patient manifests.

    Images go to ``out_root/<dataset>/<patient_id>/<patient_id>_<instance:04d>[_t<n>].png``,
    manifests to ``out_root/<dataset>/<patient_id>.tsv`` (columns `MANIFEST_COLUMNS`, paths
    relative to ``out_root/<dataset>``). `heart_mask` and `lesion_mask` (true coronary
    lesion pixels, or None when unknown) are bool arrays of the shape of `volume.hu`
    (slice, row, col); `slice_labels` maps each instance number to its label-table row.
    """
    out_root = Path(out_root)
    hu, heart_mask, lesion_mask = _checked_arrays(patient_id, volume.hu, heart_mask, lesion_mask)
    instances = [int(n) for n in volume.instance_numbers]
    _check_instances(patient_id, instances, hu.shape[0], slice_labels)
    pixel_area_mm2 = _pixel_area_mm2(patient_id, volume.pixel_spacing_mm)
    score_per_weight = pixel_area_mm2 * float(volume.slice_spacing_mm) / REFERENCE_SPACING_MM
    pixel_mm = float(np.sqrt(pixel_area_mm2))  # the side of a (square) slice pixel

    grey = window_to_uint8(hu, settings.window_center_hu, settings.window_width_hu)
    grey = _slabs(grey, settings.slab)
    bright = heart_mask & (hu >= THRESHOLD_HU)
    candidates = lesion_mask & (hu >= THRESHOLD_HU) if lesion_mask is not None else bright
    has_candidates = candidates.any(axis=(1, 2))
    has_heart = heart_mask.any(axis=(1, 2))

    # Images go to a staging folder per dataset that replaces the patient's folder at the
    # end: one rename makes the folder atomic and leaves no image of an earlier run behind.
    folders = {name: _staging_folder(out_root / name, patient_id) for name in DATASETS}
    writer = _PatientWriter(patient_id, folders, settings, pixel_mm, score_per_weight)
    n_dropped = n_calcium_dropped = n_without_tile = n_calcium_tiles = 0
    for k, instance in enumerate(instances):
        # Without a label table (cacflow ingest on a new study) the labels stay empty.
        label = slice_labels[instance] if slice_labels is not None else UNLABELLED
        source, look = _tile_label_source(label, lesion_mask is not None, bool(has_candidates[k]))
        weights = lesion_weights(candidates[k], hu[k], pixel_area_mm2) if look else None
        shown = lesion_weights(bright[k], hu[k], pixel_area_mm2) if bright[k].any() else None
        ct_slice = _Slice(
            instance,
            grey[k],
            heart_mask[k],
            _slice_columns(label),
            source,
            weights,
            None if shown is None else shown > 0,
        )
        writer.write_original(ct_slice)
        box = heart_box(heart_mask[k], settings.grid) if has_heart[k] else None
        if box is None:
            n_dropped += 1
            n_calcium_dropped += int(label.calcium)
            continue
        n_positive = writer.write_heart(ct_slice, box)
        n_calcium_tiles += n_positive
        n_without_tile += int(label.calcium and n_positive == 0)

    manifests = {name: out_root / name / f"{patient_id}.tsv" for name in DATASETS}
    for name in DATASETS:  # images first: a manifest only names images that are there
        _replace_folder(folders[name], out_root / name / patient_id)
        write_tsv(manifests[name], writer.rows[name], MANIFEST_COLUMNS)
    return PatientDatasets(
        patient_id=patient_id,
        rows=writer.rows,
        manifests=manifests,
        n_slices=len(instances),
        n_empty_mask_dropped=n_dropped,
        n_calcium_slices=sum(int(slice_labels[n].calcium) for n in instances)
        if slice_labels is not None
        else 0,
        n_calcium_slices_dropped=n_calcium_dropped,
        n_calcium_slices_without_positive_tile=n_without_tile,
        n_calcium_tiles=n_calcium_tiles,
    )


def _slabs(grey: np.ndarray, slab: int) -> np.ndarray:
    """(slice, row, col) grey levels, or with ``slab`` 3 (slice, row, col, 3): each slice
    between its neighbours, the end slices repeated."""
    if slab == 1:
        return grey
    above = np.concatenate([grey[:1], grey[:-1]])
    below = np.concatenate([grey[1:], grey[-1:]])
    return np.stack([above, grey, below], axis=-1)


def _slice_columns(label: SliceLabel) -> tuple[str, str, str]:
    """(label, cac_class, label_source) of the images of a whole slice."""
    if label is UNLABELLED:
        return "", "", "none"
    if label.calcium:
        return CALCIUM, label.cac_class, "label_table"
    return NO_CALCIUM, "", "label_table"


def _tile_label_source(
    label: SliceLabel, has_lesion_map: bool, has_candidates: bool
) -> tuple[str, bool]:
    """(label_source of a slice's tiles, whether to look for lesions on the slice)."""
    if has_lesion_map:
        return "lesion_map", has_candidates
    if label is UNLABELLED:
        return "none", False
    return ("hu_candidates" if label.calcium else "label_table"), label.calcium and has_candidates


@dataclass(frozen=True)
class _Slice:
    """What one slice's images are made from."""

    instance: int
    grey: np.ndarray  # the slice in the HU window, 8 bits; (row, col[, 3]) (`_slabs`)
    heart_mask: np.ndarray
    columns: tuple[str, str, str]  # label, cac_class, label_source of the whole slice
    tile_source: str  # label_source of its tiles
    weights: np.ndarray | None  # `lesion_weights` of the slice, None without a lesion
    candidates: np.ndarray | None  # candidate pixels (see candidate_mm2), None without any

    @property
    def lesion_pixels(self) -> np.ndarray | None:
        """The qualifying lesion pixels, carried into every image as a mask so a later
        transform (augmentation) can recompute the label."""
        return self.weights > 0 if self.weights is not None else None


@dataclass
class _PatientWriter:
    """Writes one patient's images into staging folders and collects their manifest rows."""

    patient_id: str
    folders: dict[str, Path]
    settings: DatasetSettings
    pixel_mm: float  # the side of a (square) slice pixel
    score_per_weight: float  # the Agatston score of a lesion pixel of density weight 1
    rows: dict[str, list[dict]] = field(default_factory=lambda: {name: [] for name in DATASETS})

    def write_original(self, ct_slice: _Slice) -> None:
        """The whole slice at full size."""
        n_rows, n_cols = ct_slice.grey.shape[:2]
        whole = (0, n_rows, 0, n_cols)
        self._add(
            "original",
            ct_slice,
            0,
            ct_slice.grey,
            ct_slice.columns,
            whole,
            ct_slice.lesion_pixels,
            None,
        )

    def write_heart(self, ct_slice: _Slice, box: tuple[int, int, int, int]) -> int:
        """The segmented image and the tiles of the slice's heart box; returns how many
        tiles are calcium."""
        settings = self.settings
        mask = ct_slice.heart_mask if ct_slice.grey.ndim == 2 else ct_slice.heart_mask[..., None]
        square = cut(np.where(mask, ct_slice.grey, np.uint8(0)), box)
        lesion_pixels = ct_slice.lesion_pixels
        in_heart = lesion_pixels & ct_slice.heart_mask if lesion_pixels is not None else None
        self._add(
            "segmented",
            ct_slice,
            0,
            square,
            ct_slice.columns,
            box,
            in_heart,
            settings.segmented_size,
        )

        weights = ct_slice.weights
        if weights is not None:
            # Only what the segmented image shows can make a tile calcium.
            weights = np.where(ct_slice.heart_mask, weights, np.uint8(0))
        if settings.cropped_context == "box":
            square = cut(ct_slice.grey, box)
        n_positive = 0
        edges = tile_boxes((0, box[1] - box[0], 0, box[3] - box[2]), settings.grid)
        for tile, (r0, r1, c0, c1) in enumerate(edges, start=1):
            tile_box = (box[0] + r0, box[0] + r1, box[2] + c0, box[2] + c1)
            label, cac_class = tile_label(
                weights,
                tile_box,
                self.pixel_mm**2,
                self.score_per_weight,
                settings.min_tile_lesion_area_mm2,
            )
            if ct_slice.tile_source == "none":
                label = ""
            n_positive += label == CALCIUM
            columns = (label, cac_class, ct_slice.tile_source)
            tile_pixels = square[r0:r1, c0:c1]
            self._add(
                "cropped",
                ct_slice,
                tile,
                tile_pixels,
                columns,
                tile_box,
                in_heart,
                settings.tile_size,
            )
        return n_positive

    def _add(
        self,
        dataset: str,
        ct_slice: _Slice,
        tile: int,
        pixels: np.ndarray,
        columns: tuple[str, str, str],
        box: tuple[int, int, int, int],
        lesion_pixels: np.ndarray | None,
        size: int | None,
    ) -> None:
        """Write the box of the slice (`pixels`), resized to `size` unless None, its lesion
        mask when it is labelled calcium, and its manifest row."""
        name = f"{self.patient_id}_{ct_slice.instance:04d}" + (f"_t{tile}" if tile else "") + ".png"
        folder, level = self.folders[dataset], self.settings.png_compress_level
        if size is not None:
            pixels = resized(pixels, size)
        (folder / name).write_bytes(png_bytes(pixels, level))
        # The side of an image pixel: the box's side over the image's.
        pixel_mm = self.pixel_mm if size is None else (box[1] - box[0]) * self.pixel_mm / size
        label, cac_class, source = columns
        self.rows[dataset].append(
            {
                "patient_id": self.patient_id,
                "slice": ct_slice.instance,
                "tile": tile,
                "path": f"{self.patient_id}/{name}",
                "label": label,
                "cac_class": cac_class,
                "label_source": source,
                **_box_columns(box),
                "pixel_mm": f"{pixel_mm:.5g}",
                "lesion_mask": _lesion_mask_file(
                    folder, self.patient_id, name, lesion_pixels, box, size, level
                )
                if label == CALCIUM
                else "",
                "candidate_mm2": _shown_area_mm2(ct_slice.candidates, box, self.pixel_mm**2),
            }
        )


def _shown_area_mm2(
    pixels: np.ndarray | None, box: tuple[int, int, int, int], pixel_area_mm2: float
) -> str:
    """The area of `pixels` (bool, the slice's) inside `box`, for a manifest."""
    if pixels is None:
        return "0"
    return f"{np.count_nonzero(cut(pixels, box)) * pixel_area_mm2:.4g}"


def _lesion_mask_file(
    folder: Path,
    patient_id: str,
    name: str,
    lesion_pixels: np.ndarray | None,
    box: tuple[int, int, int, int],
    size: int | None,
    level: int,
) -> str:
    """Write the lesion pixels of an image's box as an 8-bit mask beside it (255 = lesion,
    resized like the image, nearest neighbour) under `<patient>/lesion/`; return its path
    relative to the dataset folder, or "" when the box holds no lesion pixel."""
    if lesion_pixels is None:
        return ""
    mask = cut(lesion_pixels.astype(np.uint8) * np.uint8(255), box)
    if not mask.any():
        return ""
    if size is not None:
        mask = resized(mask, size, nearest=True)
    (folder / "lesion").mkdir(exist_ok=True)
    (folder / "lesion" / name).write_bytes(png_bytes(mask, level))
    return f"{patient_id}/lesion/{name}"


def merge_manifests(paths: Iterable[Path], out_path: Path) -> int:
    """Concatenate per-patient manifests, in the order of the sorted paths (as
    `cacflow.tables.merge_tsv`), into one; returns the row count.

    Paths in the rows stay valid when `out_path` lies in the same dataset folder
    (``<dataset>/manifest.tsv``).
    """
    rows: list[dict] = []
    for path in sorted(map(Path, paths), key=str):
        header = tsv_columns(path)
        if tuple(header) != MANIFEST_COLUMNS:
            raise DatasetError(f"{path}: manifest columns {header}, expected {MANIFEST_COLUMNS}")
        rows.extend(read_tsv(path))
    write_tsv(Path(out_path), rows, MANIFEST_COLUMNS)
    return len(rows)


def _box_columns(box: tuple[int, int, int, int]) -> dict[str, int]:
    return dict(zip(("row0", "row1", "col0", "col1"), box, strict=True))


def _staging_folder(dataset_root: Path, patient_id: str) -> Path:
    staging = dataset_root / f".{patient_id}.part"
    if staging.exists():  # left by a killed run
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _replace_folder(staging: Path, final: Path) -> None:
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def _checked_arrays(
    patient_id: str, hu: np.ndarray, heart_mask: np.ndarray, lesion_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    hu = np.asarray(hu)
    if hu.ndim != 3:
        raise DatasetError(f"{patient_id}: hu must be (slice, row, col), got shape {hu.shape}")
    heart_mask = np.asarray(heart_mask, dtype=bool)
    if heart_mask.shape != hu.shape:
        raise DatasetError(
            f"{patient_id}: heart mask shape {heart_mask.shape} differs from hu {hu.shape}"
        )
    if lesion_mask is not None:
        lesion_mask = np.asarray(lesion_mask, dtype=bool)
        if lesion_mask.shape != hu.shape:
            raise DatasetError(
                f"{patient_id}: lesion mask shape {lesion_mask.shape} differs from hu {hu.shape}"
            )
    return hu, heart_mask, lesion_mask


def _check_instances(
    patient_id: str, instances: list[int], n_slices: int, slice_labels: Mapping[int, SliceLabel]
) -> None:
    if len(instances) != n_slices:
        raise DatasetError(f"{patient_id}: {len(instances)} instance numbers for {n_slices} slices")
    if len(set(instances)) != len(instances):
        raise DatasetError(f"{patient_id}: repeated instance numbers {instances}")
    missing = [n for n in instances if slice_labels is not None and n not in slice_labels]
    if missing:
        raise DatasetError(f"{patient_id}: no label-table row for instance numbers {missing}")


def _pixel_area_mm2(patient_id: str, pixel_spacing_mm: tuple[float, float] | float) -> float:
    spacing = np.broadcast_to(np.asarray(pixel_spacing_mm, dtype=float), (2,))
    if not (spacing > 0).all():
        raise DatasetError(f"{patient_id}: pixel spacing must be positive, got {pixel_spacing_mm}")
    return float(spacing[0] * spacing[1])
