"""Boxes on an axial slice: the square around the heart mask, its tiles, and cutting and
resizing a box's pixels (boxes are half-open ``(row0, row1, col0, col1)``)."""

from __future__ import annotations

import numpy as np
from PIL import Image


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


def cut(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The box of an image (rows, cols[, channels]), zero (black) where it passes the
    image edge."""
    row0, row1, col0, col1 = box
    n_rows, n_cols = image.shape[:2]
    r0, r1, c0, c1 = max(row0, 0), min(row1, n_rows), max(col0, 0), min(col1, n_cols)
    if (r0, r1, c0, c1) == (row0, row1, col0, col1):
        return image[r0:r1, c0:c1]
    out = np.zeros((row1 - row0, col1 - col0, *image.shape[2:]), dtype=image.dtype)
    if r0 < r1 and c0 < c1:
        out[r0 - row0 : r1 - row0, c0 - col0 : c1 - col0] = image[r0:r1, c0:c1]
    return out


def resized(image: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """An image (rows, cols[, 3]) resized to size x size (bilinear, or nearest neighbour
    for masks)."""
    if image.shape[:2] == (size, size):
        return image
    picture = Image.fromarray(np.ascontiguousarray(image))
    method = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(picture.resize((size, size), method))
