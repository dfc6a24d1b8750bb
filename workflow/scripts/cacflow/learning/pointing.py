"""Does a heat map point at the calcium? The pointing game of the calcium classifiers' maps:
the share of each map's heat within `POINTING_RADIUS_MM` of a true lesion (the
energy-based pointing game of Wang et al., Score-CAM, 2020) and whether its peak lies there
(Zhang et al. 2016), over true-positive calcium images, each map beside the same map of a
network randomised above its layer (`cacflow.learning.map_checks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
from numpy.typing import ArrayLike
from PIL import Image
from scipy import ndimage

from cacflow.learning.gradcam import grad_cam, model_images
from cacflow.learning.map_checks import GUIDED_PREFIX, checked_maps

# Heat within this distance of a true lesion counts as pointing at it.
POINTING_RADIUS_MM = 5.0


class Pointing(NamedTuple):
    """Per heat map: the share of its heat within the radius of a lesion (the energy-based
    pointing game) and whether its peak lies there (1.0 or 0.0; Zhang et al. 2016's
    pointing game); NaN for a map without heat."""

    shares: np.ndarray
    hits: np.ndarray


def heat_near_lesions(
    cams: np.ndarray, lesion_masks: list[np.ndarray], pixel_mm: ArrayLike, radius_mm: float
) -> Pointing:
    """Does each heat map show the reader the calcium? `cams` (n, h, w) at the model's
    input; `lesion_masks` boolean, each at its stored image's size, whose pixels are
    `pixel_mm` wide. Each map is resized to its mask bilinearly."""
    shares = np.full(len(cams), np.nan)
    hits = np.full(len(cams), np.nan)
    for i, (cam, mask) in enumerate(zip(cams, lesion_masks, strict=True)):
        mask = np.asarray(mask, bool)
        heat = heat_at(cam, mask.shape)
        if heat.sum() <= 0 or not mask.any():
            continue
        near = ndimage.distance_transform_edt(~mask, sampling=float(pixel_mm[i])) <= radius_mm
        shares[i] = heat[near].sum() / heat.sum()
        hits[i] = float(near.flat[np.argmax(heat)])
    return Pointing(shares, hits)


def heat_at(cam: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A heat map resized bilinearly to `shape`, negative values clipped."""
    heat = ndimage.zoom(cam, (shape[0] / cam.shape[0], shape[1] / cam.shape[1]), order=1)
    return np.clip(heat[: shape[0], : shape[1]], 0.0, None)


def true_positive_tiles(
    predictions: list[dict],
    manifest: list[dict],
    dataset_root: Path,
    image_size: int,
    channels: int,
    threshold: float = 0.5,
    resize: str = "area",
) -> tuple[np.ndarray, list[np.ndarray], list[float]]:
    """The true-positive calcium images of `predictions` (rows of predictions.tsv) that have
    a lesion mask in the dataset's `manifest`: the images as the model sees them
    (`model_images`), their lesion masks (boolean, stored size) and pixel sizes (mm)."""
    masks = {r["path"]: r for r in manifest if r.get("lesion_mask")}
    hits = [
        r
        for r in predictions
        if r["label"] == "calcium" and float(r["probability"]) >= threshold and r["path"] in masks
    ]
    root = Path(dataset_root)
    images = model_images([root / r["path"] for r in hits], image_size, channels, resize)
    lesions = [np.asarray(Image.open(root / masks[r["path"]]["lesion_mask"])) > 127 for r in hits]
    return images, lesions, [float(masks[r["path"]]["pixel_mm"]) for r in hits]


def pointing_game(
    model: keras.Model,
    predictions: list[dict],
    manifest: list[dict],
    dataset_root: Path,
    image_size: int,
    channels: int,
    threshold: float = 0.5,
    radius_mm: float = POINTING_RADIUS_MM,
    layer_name: str | None = None,
    method: str = "gradcam",
    resize: str = "area",
) -> Pointing:
    """`heat_near_lesions` of the Grad-CAM maps (of `layer_name`) of the true-positive
    calcium images of `predictions` (rows of predictions.tsv, one split) that have a lesion
    mask in the dataset's `manifest`."""
    images, lesions, pixel_mm = true_positive_tiles(
        predictions, manifest, dataset_root, image_size, channels, threshold, resize
    )
    if not len(images):
        return Pointing(np.zeros(0), np.zeros(0))
    cams = grad_cam(model, images, layer_name=layer_name, method=method)
    return heat_near_lesions(cams, lesions, pixel_mm, radius_mm)


POINTING_COLUMNS = (
    "dataset", "model", "method", "layer", "map_cells", "n_images", "mean_share", "median_share",
    "peak_hit_rate", "random_mean_share", "radius_mm",
)  # fmt: skip


def pointing_row(
    dataset: str,
    model: str,
    layer: str,
    cells: str,
    pointing: Pointing,
    radius_mm: float,
    method: str = "gradcam",
    randomised: Pointing | None = None,
) -> dict:
    """One row of the pointing-game table (`POINTING_COLUMNS`), for the `method` maps of
    `layer` (`cells` its map size), with the mean share of the `randomised` network's maps
    when given; NaN without any image."""
    shares = np.asarray(pointing.shares, float)
    hits = np.asarray(pointing.hits, float)[~np.isnan(shares)]
    shares = shares[~np.isnan(shares)]
    random = np.asarray(randomised.shares if randomised else [], float)
    random = random[~np.isnan(random)]
    return {
        "dataset": dataset,
        "model": model,
        "method": method,
        "layer": layer,
        "map_cells": cells,
        "n_images": int(shares.size),
        "mean_share": round(float(shares.mean()), 4) if shares.size else float("nan"),
        "median_share": round(float(np.median(shares)), 4) if shares.size else float("nan"),
        "peak_hit_rate": round(float(hits.mean()), 4) if hits.size else float("nan"),
        "random_mean_share": round(float(random.mean()), 4) if random.size else float("nan"),
        "radius_mm": radius_mm,
    }


def checked_pointing(
    model: keras.Model,
    images: np.ndarray,
    lesions: list[np.ndarray],
    pixel_mm: list[float],
    layer: str,
    method: str,
    radius_mm: float = POINTING_RADIUS_MM,
) -> list[tuple[str, Pointing, Pointing]]:
    """Per map of `checked_maps` (the `method` map of `layer`, its Guided Grad-CAM): the
    method's name, the pointing of the trained network's maps and of the randomised's."""
    if not len(images):
        empty = Pointing(np.zeros(0), np.zeros(0))
        return [(name, empty, empty) for name in (method, GUIDED_PREFIX + method)]
    return [
        (
            checked.method,
            heat_near_lesions(checked.trained, lesions, pixel_mm, radius_mm),
            heat_near_lesions(checked.randomised, lesions, pixel_mm, radius_mm),
        )
        for checked in checked_maps(model, images, layer, method)
    ]
