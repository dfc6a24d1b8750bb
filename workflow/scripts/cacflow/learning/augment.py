"""Augmentation of training images with labels that stay true.

The transforms are those of Lee et al. (Sensors 2021, Algorithm 1, Keras ImageDataGenerator):
rotation, shear, zoom, horizontal flip, width and height shift, composed into ONE affine map
per image (one resampling, not four). The paper augmented before splitting; here only
images of training patients are augmented (`results/splits/patients.tsv`), so no copy of a
validation or test image can reach training.

Labels. A transform can push a lesion out of the frame. An augmented image is ``calcium``
only when the lesion it still shows covers at least ``min_lesion_area_mm2`` (the Agatston
minimum, 1 mm^2): the lesion pixels of the source image's mask (``lesion_mask`` of the
manifest) are mapped forward and those landing inside the output frame are counted, each
with the source pixel's area (``pixel_mm``^2). Images without a lesion stay ``no_calcium``
(a transform adds no lesion). Calcium images without a lesion mask cannot be relabelled and
are never augmented. ``cac_class``: ``low`` stays ``low`` (a partial lesion scores less);
``high`` stays ``high`` when the whole lesion stays in view, and becomes "" (unknown)
otherwise.

Geometry: pixel (row, col) has x = col, y = row, centres at integer indices; the map is
centre, then flip, zoom (magnification m: content looks m times larger), shear, rotation,
shift, back from centre. `forward_matrices` is written for numpy or TensorFlow arrays
(``xp``), so the materialized images here and the on-the-fly augmentation of
`cacflow.learning.inputs` use the same maps.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from cacflow import settings_from_config
from cacflow.imaging.png import png_bytes
from cacflow.tables import write_tsv

# Columns of a parameter vector: degrees, degrees, magnification, 0/1, fractions of the side.
PARAMS = ("rotation_deg", "shear_deg", "zoom", "flip", "shift_x", "shift_y")
IDENTITY = np.array([0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
AUGMENTED_COLUMNS = (
    "patient_id",
    "slice",
    "tile",
    "path",
    "label",
    "cac_class",
    "label_source",
    "source_path",
    "pixel_mm",
    "lesion_mask",
    "lesion_area_mm2",
    "candidate_mm2",  # of the source image (a transform moves candidates, rarely out of view)
    *PARAMS,
)


class AugmentError(ValueError):
    """Inputs that cannot be augmented (a non-training patient, missing columns)."""


@dataclass(frozen=True)
class AugmentSettings:
    """Fed from the workflow's ``augmentation:`` config section."""

    fraction: float = 0.1  # augmented images per training image of the dataset
    rotation_deg: float = 15.0  # uniform in [-r, r]
    shear_deg: float = 10.0  # uniform in [-s, s]
    zoom: float = 0.1  # magnification uniform in [1 - z, 1 + z]
    horizontal_flip: bool = True  # with probability 1/2
    width_shift: float = 0.1  # fraction of the width, uniform in [-w, w]
    height_shift: float = 0.1
    min_lesion_area_mm2: float = 1.0

    def __post_init__(self) -> None:
        if self.fraction < 0 or not 0 <= self.zoom < 1 or self.min_lesion_area_mm2 < 0:
            raise AugmentError(f"bad augmentation settings: {self}")

    @classmethod
    def from_config(cls, config: Mapping) -> AugmentSettings:
        return settings_from_config(cls, config)


def sample_params(rng: np.random.Generator, settings: AugmentSettings, n: int) -> np.ndarray:
    """(n, 6) parameter vectors (`PARAMS`) drawn uniformly within the settings."""
    u = rng.random((n, 6))
    return params_from_uniform(u, settings, np)


def params_from_uniform(u, settings: AugmentSettings, xp=np):
    """Parameter vectors from uniform [0, 1) draws of shape (n, 6); numpy or TF (``xp``)."""

    def spread(column, half_width):
        return (2.0 * u[:, column] - 1.0) * half_width

    flip = xp.cast(u[:, 3] < 0.5, u.dtype) if xp is not np else (u[:, 3] < 0.5).astype(u.dtype)
    if not settings.horizontal_flip:
        flip = flip * 0.0
    return xp.stack(
        [
            spread(0, settings.rotation_deg),
            spread(1, settings.shear_deg),
            1.0 + spread(2, settings.zoom),
            flip,
            spread(4, settings.width_shift),
            spread(5, settings.height_shift),
        ],
        axis=1,
    )


def forward_matrices(params, height: int, width: int, xp=np):
    """(n, 3, 3) maps of source (x, y, 1) onto output pixel coordinates; numpy or TF."""
    rotation = params[:, 0] * (np.pi / 180.0)
    shear = params[:, 1] * (np.pi / 180.0)
    zoom, flip = params[:, 2], params[:, 3]
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    tx, ty = params[:, 4] * width, params[:, 5] * height
    cos, sin, tan = xp.cos(rotation), xp.sin(rotation), xp.tan(shear)
    sx = zoom * (1.0 - 2.0 * flip)  # flip mirrors x before the rest
    # [[cos, -sin], [sin, cos]] @ [[1, tan], [0, 1]] @ diag(sx, zoom), then the centre and shift.
    a, b = cos * sx, (cos * tan - sin) * zoom
    c, d = sin * sx, (sin * tan + cos) * zoom
    e = cx + tx - a * cx - b * cy
    f = cy + ty - c * cx - d * cy
    zero, one = xp.zeros_like(a), xp.ones_like(a)
    rows = [xp.stack(r, axis=1) for r in ((a, b, e), (c, d, f), (zero, zero, one))]
    return xp.stack(rows, axis=1)


def kept_points(points_yx: np.ndarray, forward: np.ndarray, height: int, width: int) -> int:
    """How many source pixels (row, col) land inside the output frame."""
    if len(points_yx) == 0:
        return 0
    x = forward[0, 0] * points_yx[:, 1] + forward[0, 1] * points_yx[:, 0] + forward[0, 2]
    y = forward[1, 0] * points_yx[:, 1] + forward[1, 1] * points_yx[:, 0] + forward[1, 2]
    inside = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    return int(inside.sum())


def warp(image: np.ndarray, forward: np.ndarray, order: int = 1) -> np.ndarray:
    """The uint8 image (rows, cols[, channels]) resampled through the map (black outside
    the source), each channel alike."""
    if image.ndim == 3:
        channels = [warp(image[..., c], forward, order) for c in range(image.shape[2])]
        return np.stack(channels, axis=-1)
    inverse = np.linalg.inv(forward)
    # scipy indexes (row, col): swap x and y of the inverse map.
    matrix = inverse[[1, 0]][:, [1, 0]]
    offset = inverse[[1, 0], 2]
    out = ndimage.affine_transform(
        image.astype(np.float32), matrix, offset, order=order, mode="constant", cval=0.0
    )
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def read_image(path: Path) -> np.ndarray:
    """A dataset PNG as stored: grey (rows, cols) or a slab's RGB (rows, cols, 3)."""
    with Image.open(path) as image:
        return np.asarray(image)


def augment_dataset(
    rows: Sequence[Mapping],
    dataset_root: Path,
    split_of: Mapping[str, str],
    out_root: Path,
    settings: AugmentSettings,
    seed: int | Sequence[int],
) -> list[dict]:
    """Write augmented copies of training images under ``out_root/images/<patient>/`` and
    ``out_root/manifest.tsv``; return the manifest rows.

    `rows` are the dataset's manifest rows (paths relative to `dataset_root`); `split_of`
    maps every patient with images to its split. Only ``train`` rows are read.
    """
    dataset_root, out_root = Path(dataset_root), Path(out_root)
    unknown = sorted({str(r["patient_id"]) for r in rows} - set(split_of))
    if unknown:
        raise AugmentError(f"patients with images but not in the split table: {unknown}")
    train = [r for r in rows if split_of[str(r["patient_id"])] == "train" and r["label"]]
    eligible = [r for r in train if r["label"] != "calcium" or r.get("lesion_mask")]
    n_augmented = round(settings.fraction * len(train))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    if eligible and n_augmented:
        # Without replacement first; past 100 % of the images, further rounds.
        while len(chosen) < n_augmented:
            take = min(n_augmented - len(chosen), len(eligible))
            chosen += sorted(rng.choice(len(eligible), take, replace=False).tolist())
    params = sample_params(rng, settings, len(chosen))

    staging = out_root / ".images.part"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    out_rows = []
    for number, (index, vector) in enumerate(zip(chosen, params, strict=True), start=1):
        source = eligible[index]
        out_rows.append(_augment_one(source, vector, number, dataset_root, staging, settings))
    final = out_root / "images"
    old = out_root / ".images.old"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)
    write_tsv(out_root / "manifest.tsv", out_rows, AUGMENTED_COLUMNS)
    return out_rows


def _augment_one(
    source: Mapping,
    vector: np.ndarray,
    number: int,
    dataset_root: Path,
    staging: Path,
    settings: AugmentSettings,
) -> dict:
    patient_id = str(source["patient_id"])
    image = read_image(dataset_root / source["path"])
    height, width = image.shape[:2]
    forward = forward_matrices(vector[None], height, width)[0]
    stem = Path(source["path"]).stem
    name = f"{stem}_a{number:05d}.png"
    folder = staging / patient_id
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(png_bytes(warp(image, forward), 1))

    pixel_mm = float(source["pixel_mm"])
    label, cac_class, kept_mm2, mask_path = "no_calcium", "", 0.0, ""
    if source["label"] == "calcium":
        lesion = read_grey(dataset_root / source["lesion_mask"]) > 127
        points = np.argwhere(lesion)
        n_kept = kept_points(points, forward, height, width)
        kept_mm2 = n_kept * pixel_mm**2
        if kept_mm2 >= settings.min_lesion_area_mm2:
            label = "calcium"
            whole = n_kept == len(points)
            cac_class = source["cac_class"] if source["cac_class"] == "low" or whole else ""
            (folder / "lesion").mkdir(exist_ok=True)
            mask = warp(lesion.astype(np.uint8) * 255, forward, order=0)
            (folder / "lesion" / name).write_bytes(png_bytes(mask, 1))
            mask_path = f"images/{patient_id}/lesion/{name}"
    return {
        "patient_id": patient_id,
        "slice": source["slice"],
        "tile": source["tile"],
        "path": f"images/{patient_id}/{name}",
        "label": label,
        "cac_class": cac_class,
        "label_source": "augmented",
        "source_path": source["path"],
        "pixel_mm": f"{pixel_mm / vector[2]:.5g}",
        "lesion_mask": mask_path,
        "lesion_area_mm2": f"{kept_mm2:.4g}",
        "candidate_mm2": source.get("candidate_mm2", "0"),
        **{name: f"{value:.6g}" for name, value in zip(PARAMS, vector, strict=True)},
    }
