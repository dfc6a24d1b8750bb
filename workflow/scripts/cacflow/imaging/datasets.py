"""The three image datasets of Lee et al. (Sensors 2021, 21, 7059) for one patient.

Per axial slice, from HU and heart-mask arrays already in memory:

- ``original``: the whole slice, windowed to 8 bits, at full size;
- ``segmented``: heart pixels only (the rest black), cropped to the bounding box of the
  slice's heart mask, made square by padding the shorter side symmetrically (black where
  the square passes the image edge) and resized to ``segmented_size``;
- ``cropped``: the same square split into a ``grid`` x ``grid`` grid at native resolution,
  each tile resized to ``tile_size``; tiles are numbered 1..grid^2 row-major.

Slices with an empty heart mask are dropped from ``segmented`` and ``cropped`` (the paper
drops black segmentations) and counted.

Labels. Whole slices (original, segmented) take the calcium label of the user's label
table. A tile is ``calcium`` when it shows pixels of a qualifying coronary lesion: a 2-D
8-connected component of (lesion map & HU >= 130) with an area >= 1 mm^2 over the whole
slice, the standard Agatston lesion (``cacflow.scoring.agatston``). Assumptions:

- only lesion pixels inside the heart mask count, because the rest is black in the image;
  the 1 mm^2 rule applies to the whole component before it is cut by the mask and the grid;
- a tile's Agatston score is, over the lesions it shows, (lesion pixels in the tile x pixel
  area) x the density weight of the lesion's peak HU x slice spacing / 3 mm; the weight is a
  property of the whole lesion, so the tile scores of a slice add up to its score. The
  tile's class is ``low`` below 20 and ``high`` from 20 (the paper's patient classes);
- without a lesion map (user data) the candidates are components of HU >= 130 inside the
  heart mask (area >= 1 mm^2), looked for only on slices the label table marks calcium:
  tiles of other slices are ``no_calcium`` by the label table.

Geometry is recorded in the manifests as half-open boxes ``[row0, row1) x [col0, col1)`` in
the pixel coordinates of the original slice (they may extend past its edges), so Grad-CAM
and prediction can map an image back onto the slice: pixel (r, c) of the slice lies at
``((r - row0 + 0.5) * size / (row1 - row0) - 0.5, ...)`` of the resized image.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cacflow import settings_from_config
from cacflow.scoring.agatston import (
    MIN_AREA_MM2,
    REFERENCE_SPACING_MM,
    THRESHOLD_HU,
    cac_class,
    density_weight,
)
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
)
CALCIUM, NO_CALCIUM = "calcium", "no_calcium"
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


class DatasetError(ValueError):
    """Inputs that cannot make a patient's datasets (shapes, labels, instance numbers)."""


@dataclass(frozen=True)
class DatasetSettings:
    """How images are made; fed from the workflow's ``datasets:`` config section."""

    window_center_hu: float = 150.0
    window_width_hu: float = 800.0
    segmented_size: int = 299
    tile_size: int = 299
    grid: int = 3
    png_compress_level: int = 1  # zlib level of `png_bytes`: 0 stores, 1-9 compress

    def __post_init__(self) -> None:
        if self.window_width_hu <= 0:
            raise DatasetError(f"window_width_hu must be positive, got {self.window_width_hu}")
        if self.grid < 1 or self.segmented_size < 1 or self.tile_size < 1:
            raise DatasetError(f"grid and image sizes must be >= 1: {self}")
        if not 0 <= self.png_compress_level <= 9:
            raise DatasetError(f"png_compress_level must be 0..9, got {self.png_compress_level}")

    @classmethod
    def from_config(cls, config: Mapping) -> DatasetSettings:
        """From the ``datasets:`` config section; unknown keys are ignored."""
        return settings_from_config(cls, config)


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
# Geometry and intensity


def window_to_uint8(hu: np.ndarray, center_hu: float, width_hu: float) -> np.ndarray:
    """Map [center - width/2, center + width/2] linearly onto 0..255, clipped and rounded."""
    hu = np.asarray(hu)
    if hu.dtype == np.int16:
        # One table look-up per pixel instead of float arithmetic: int16 -> offset binary.
        table = _window(np.arange(-32768, 32768), center_hu, width_hu)
        return table[hu.view(np.uint16) ^ np.uint16(0x8000)]
    return _window(hu, center_hu, width_hu)


def _window(hu: np.ndarray, center_hu: float, width_hu: float) -> np.ndarray:
    low = center_hu - width_hu / 2.0
    grey = (hu.astype(np.float64) - low) * 255.0 / width_hu
    return np.rint(np.clip(grey, 0.0, 255.0)).astype(np.uint8)


def heart_box(heart_mask_slice: np.ndarray, grid: int = 1) -> tuple[int, int, int, int] | None:
    """Square half-open box (row0, row1, col0, col1) around a slice's heart mask, or None.

    The shorter side of the bounding box is padded symmetrically (an odd excess goes after);
    the side is at least `grid`, so every tile holds a pixel.
    """
    rows = np.flatnonzero(heart_mask_slice.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(heart_mask_slice.any(axis=0))
    row0, row1 = int(rows[0]), int(rows[-1]) + 1
    col0, col1 = int(cols[0]), int(cols[-1]) + 1
    side = max(row1 - row0, col1 - col0, grid)
    row0 -= (side - (row1 - row0)) // 2
    col0 -= (side - (col1 - col0)) // 2
    return row0, row0 + side, col0, col0 + side


def tile_boxes(box: tuple[int, int, int, int], grid: int) -> list[tuple[int, int, int, int]]:
    """The grid x grid tiles of a square box, row-major (tile n is index n - 1)."""
    row0, row1, col0, col1 = box
    row_edges = [row0 + (row1 - row0) * i // grid for i in range(grid + 1)]
    col_edges = [col0 + (col1 - col0) * j // grid for j in range(grid + 1)]
    return [
        (row_edges[i], row_edges[i + 1], col_edges[j], col_edges[j + 1])
        for i in range(grid)
        for j in range(grid)
    ]


def _cut(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box of a 2-D image, zero (black) where it passes the image edge."""
    row0, row1, col0, col1 = box
    n_rows, n_cols = image.shape
    r0, r1, c0, c1 = max(row0, 0), min(row1, n_rows), max(col0, 0), min(col1, n_cols)
    if (r0, r1, c0, c1) == (row0, row1, col0, col1):
        return image[r0:r1, c0:c1]
    out = np.zeros((row1 - row0, col1 - col0), dtype=image.dtype)
    if r0 < r1 and c0 < c1:
        out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = image[r0:r1, c0:c1]
    return out


def _resized(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    if image.shape == (size, size):
        return image
    picture = Image.fromarray(np.ascontiguousarray(image))
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(picture.resize((size, size), method))


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
    mask = _cut(lesion_pixels.astype(np.uint8) * np.uint8(255), box)
    if not mask.any():
        return ""
    if size is not None:
        mask = _resized(mask, size, nearest=True)
    (folder / "lesion").mkdir(exist_ok=True)
    (folder / "lesion" / name).write_bytes(png_bytes(mask, level))
    return f"{patient_id}/lesion/{name}"


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_bytes(image: np.ndarray, compress_level: int) -> bytes:
    """An 8-bit greyscale PNG (ISO/IEC 15948) of a 2-D uint8 array.

    Every row uses the Up filter and zlib's run-length strategy: for CT windows and
    enlarged tiles this is 2-3x faster than Pillow's per-row adaptive filtering at the same
    zlib level, and the files come out smaller. The bytes depend only on the pixels.
    """
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise DatasetError(f"PNG needs a 2-D uint8 image, got {image.dtype} {image.shape}")
    n_rows, n_cols = image.shape
    filtered = np.empty((n_rows, n_cols + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up: each byte minus the byte above it, modulo 256
    filtered[0, 1:] = image[0]
    np.subtract(image[1:], image[:-1], out=filtered[1:, 1:])
    compressor = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, zlib.Z_RLE)
    data = compressor.compress(filtered.data) + compressor.flush()
    header = struct.pack(">IIBBBBB", n_cols, n_rows, 8, 0, 0, 0, 0)  # 8-bit grey
    chunks = (_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", data), _png_chunk(b"IEND", b""))
    return _PNG_SIGNATURE + b"".join(chunks)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(data, zlib.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


# ---------------------------------------------------------------------------------------
# Lesions


def _lesion_weights(
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


def _tile_label(
    weights: np.ndarray | None, box: tuple[int, int, int, int], score_per_weight: float
) -> tuple[str, str]:
    """(label, cac_class) of a tile from the lesion-weight map of its slice."""
    if weights is None:
        return NO_CALCIUM, ""
    inside = _cut(weights, box)
    if not inside.any():
        return NO_CALCIUM, ""
    score = float(inside.sum(dtype=np.int64)) * score_per_weight
    return CALCIUM, cac_class(score)


# ---------------------------------------------------------------------------------------
# One patient


def build_patient_datasets(
    out_root: Path,
    patient_id: str,
    hu: np.ndarray,
    heart_mask: np.ndarray,
    instance_numbers: Sequence[int],
    pixel_spacing_mm: tuple[float, float] | float,
    slice_spacing_mm: float,
    slice_labels: Mapping[int, SliceLabel] | None,
    lesion_mask: np.ndarray | None,
    settings: DatasetSettings,
) -> PatientDatasets:
    """Write a patient's original, segmented and cropped PNGs and per-patient manifests.

    Images go to ``out_root/<dataset>/<patient_id>/<patient_id>_<instance:04d>[_t<n>].png``,
    manifests to ``out_root/<dataset>/<patient_id>.tsv`` (columns `MANIFEST_COLUMNS`, paths
    relative to ``out_root/<dataset>``). `hu` is (slice, row, col); `heart_mask` and
    `lesion_mask` (true coronary lesion pixels, or None when unknown) are bool arrays of
    the same shape; `slice_labels` maps each instance number to its label-table row.
    """
    out_root = Path(out_root)
    hu, heart_mask, lesion_mask = _checked_arrays(patient_id, hu, heart_mask, lesion_mask)
    instances = [int(n) for n in instance_numbers]
    _check_instances(patient_id, instances, hu.shape[0], slice_labels)
    pixel_area_mm2 = _pixel_area_mm2(patient_id, pixel_spacing_mm)
    score_per_weight = pixel_area_mm2 * float(slice_spacing_mm) / REFERENCE_SPACING_MM
    pixel_mm = float(np.sqrt(pixel_area_mm2))  # the side of a (square) slice pixel

    grey = window_to_uint8(hu, settings.window_center_hu, settings.window_width_hu)
    if lesion_mask is not None:
        candidates = lesion_mask & (hu >= THRESHOLD_HU)
    else:
        candidates = heart_mask & (hu >= THRESHOLD_HU)
    has_candidates = candidates.any(axis=(1, 2))
    has_heart = heart_mask.any(axis=(1, 2))

    # Images go to a staging folder per dataset that replaces the patient's folder at the
    # end: one rename makes the folder atomic and leaves no image of an earlier run behind.
    folders = {name: _staging_folder(out_root / name, patient_id) for name in DATASETS}
    rows: dict[str, list[dict]] = {name: [] for name in DATASETS}
    n_rows, n_cols = hu.shape[1:]
    n_dropped = n_calcium_dropped = n_without_tile = n_calcium_tiles = 0
    level = settings.png_compress_level

    for k, instance in enumerate(instances):
        # Without a label table (cacflow ingest on a new study) the labels stay empty.
        label = slice_labels[instance] if slice_labels is not None else UNLABELLED
        slice_label = "" if label is UNLABELLED else CALCIUM if label.calcium else NO_CALCIUM
        slice_class = label.cac_class if label.calcium else ""
        slice_source = "label_table" if label is not UNLABELLED else "none"
        stem = f"{patient_id}_{instance:04d}"
        common = {"patient_id": patient_id, "slice": instance}

        if lesion_mask is not None:
            source = "lesion_map"
            look = bool(has_candidates[k])
        elif label is UNLABELLED:
            source, look = "none", False
        else:
            source = "hu_candidates" if label.calcium else "label_table"
            look = label.calcium and bool(has_candidates[k])
        weights = _lesion_weights(candidates[k], hu[k], pixel_area_mm2) if look else None
        # The qualifying lesion pixels of the slice, carried into every image as a mask so a
        # later transform (augmentation) can recompute the label.
        lesion_pixels = weights > 0 if weights is not None else None

        name = f"{stem}.png"
        (folders["original"] / name).write_bytes(png_bytes(grey[k], level))
        whole = (0, n_rows, 0, n_cols)
        rows["original"].append(
            {
                **common,
                "tile": 0,
                "path": f"{patient_id}/{name}",
                "label": slice_label,
                "cac_class": slice_class,
                "label_source": slice_source,
                **_box_columns(whole),
                "pixel_mm": f"{pixel_mm:.5g}",
                "lesion_mask": _lesion_mask_file(
                    folders["original"], patient_id, name, lesion_pixels, whole, None, level
                )
                if slice_label == CALCIUM
                else "",
            }
        )

        box = heart_box(heart_mask[k], settings.grid) if has_heart[k] else None
        if box is None:
            n_dropped += 1
            n_calcium_dropped += int(label.calcium)
            continue
        square = _cut(np.where(heart_mask[k], grey[k], np.uint8(0)), box)
        in_heart = lesion_pixels & heart_mask[k] if lesion_pixels is not None else None
        name = f"{stem}.png"
        image = _resized(square, settings.segmented_size)
        (folders["segmented"] / name).write_bytes(png_bytes(image, level))
        side = box[1] - box[0]
        rows["segmented"].append(
            {
                **common,
                "tile": 0,
                "path": f"{patient_id}/{name}",
                "label": slice_label,
                "cac_class": slice_class,
                "label_source": slice_source,
                **_box_columns(box),
                "pixel_mm": f"{side * pixel_mm / settings.segmented_size:.5g}",
                "lesion_mask": _lesion_mask_file(
                    folders["segmented"],
                    patient_id,
                    name,
                    in_heart,
                    box,
                    settings.segmented_size,
                    level,
                )
                if slice_label == CALCIUM
                else "",
            }
        )

        if weights is not None:
            # Only what the segmented image shows can make a tile calcium.
            weights[~heart_mask[k]] = 0
        n_positive = 0
        edges = tile_boxes((0, box[1] - box[0], 0, box[3] - box[2]), settings.grid)
        for tile, (r0, r1, c0, c1) in enumerate(edges, start=1):
            tile_box = (box[0] + r0, box[0] + r1, box[2] + c0, box[2] + c1)
            tile_label, tile_class = _tile_label(weights, tile_box, score_per_weight)
            if source == "none":
                tile_label = ""
            n_positive += tile_label == CALCIUM
            name = f"{stem}_t{tile}.png"
            image = _resized(square[r0:r1, c0:c1], settings.tile_size)
            (folders["cropped"] / name).write_bytes(png_bytes(image, level))
            rows["cropped"].append(
                {
                    **common,
                    "tile": tile,
                    "path": f"{patient_id}/{name}",
                    "label": tile_label,
                    "cac_class": tile_class,
                    "label_source": source,
                    **_box_columns(tile_box),
                    "pixel_mm": f"{(r1 - r0) * pixel_mm / settings.tile_size:.5g}",
                    "lesion_mask": _lesion_mask_file(
                        folders["cropped"],
                        patient_id,
                        name,
                        in_heart,
                        tile_box,
                        settings.tile_size,
                        level,
                    )
                    if tile_label == CALCIUM
                    else "",
                }
            )
        n_calcium_tiles += n_positive
        n_without_tile += int(label.calcium and n_positive == 0)

    manifests = {name: out_root / name / f"{patient_id}.tsv" for name in DATASETS}
    for name in DATASETS:  # images first: a manifest only names images that are there
        _replace_folder(folders[name], out_root / name / patient_id)
        write_tsv(manifests[name], rows[name], MANIFEST_COLUMNS)
    return PatientDatasets(
        patient_id=patient_id,
        rows=rows,
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
