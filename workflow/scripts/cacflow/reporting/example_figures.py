"""The report figure of the image datasets, drawn from the workflow's own outputs: for a few
patients with coronary calcium, one slice as the paper's three datasets (Lee et al. 2021):
the original slice with the heart box of the segmented image, the segmented (heart only)
image with its tile grid, and the grid x grid cropped tiles, calcium tiles framed red.

Only the dataset manifests (cacflow.imaging.datasets: patient_id, slice, tile, path, label, cac_class,
and the image's box in slice pixels row0/row1/col0/col1; paths relative to the manifest's
folder) and their PNGs are read. The slice shown per patient is the one with the most
calcium tiles (the first such slice on a tie), so the choice is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on cluster nodes
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.image import imread
from matplotlib.patches import Rectangle

from cacflow.imaging.png import slice_grey
from cacflow.reporting.plotting import save_figure
from cacflow.tables import read_tsv

DATASET_NAMES = ("original", "segmented", "cropped")
CALCIUM = "calcium"


class ExampleFigureError(ValueError):
    """The manifests cannot give an example (a manifest missing, columns missing)."""


def pick_examples(
    manifests: Mapping[str, Sequence[Mapping]], n_patients: int
) -> list[tuple[str, str]]:
    """(patient_id, slice) of up to `n_patients` patients with calcium, in patient order: per
    patient the slice, present in all three datasets, with the most calcium tiles."""
    present = {
        name: {(r["patient_id"], r["slice"]) for r in manifests[name]} for name in DATASET_NAMES
    }
    shared = present["original"] & present["segmented"] & present["cropped"]
    calcium_tiles: dict[tuple[str, str], int] = {}
    for row in manifests["cropped"]:
        key = (row["patient_id"], row["slice"])
        if row["label"] == CALCIUM and key in shared:
            calcium_tiles[key] = calcium_tiles.get(key, 0) + 1
    best: dict[str, tuple[int, int, str]] = {}
    for (patient, slice_), count in calcium_tiles.items():
        candidate = (-count, int(slice_), slice_)
        if patient not in best or candidate < best[patient]:
            best[patient] = candidate
    return [(patient, best[patient][2]) for patient in sorted(best)[:n_patients]]


def draw_examples(
    manifest_paths: Mapping[str, Path], out_png: Path, n_patients: int = 3, dpi: int = 110
) -> list[tuple[str, str]]:
    """Draw the figure to `out_png` (atomically) and return the (patient_id, slice) shown.
    `manifest_paths`: dataset name -> its manifest.tsv. A cohort without calcium tiles gets a
    figure that says so."""
    missing = [name for name in DATASET_NAMES if name not in manifest_paths]
    if missing:
        raise ExampleFigureError(f"no manifest given for datasets {missing}")
    roots = {name: Path(manifest_paths[name]).parent for name in DATASET_NAMES}
    manifests = {name: read_tsv(Path(manifest_paths[name])) for name in DATASET_NAMES}
    for name, rows in manifests.items():
        needed = {"patient_id", "slice", "tile", "path", "label"}
        if rows and not needed <= set(rows[0]):
            raise ExampleFigureError(
                f"{manifest_paths[name]}: manifest lacks columns {sorted(needed - set(rows[0]))}"
            )
    examples = pick_examples(manifests, n_patients)
    if not examples:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no slice with a calcium tile in this cohort", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, Path(out_png), dpi)
        return []
    index = {name: _by_slice(rows) for name, rows in manifests.items()}  # (patient, slice) -> rows
    tiles_of = index["cropped"]
    grid = max(round(math.sqrt(max(int(r["tile"]) for r in tiles_of[key]))) for key in examples)
    fig = plt.figure(
        figsize=(3.0 * 2 + 1.1 * grid, 3.4 * len(examples) + 0.4), layout="constrained"
    )
    fig.suptitle(
        "One slice per patient as the three datasets: original (heart box yellow), segmented "
        "(tiles), cropped tiles; calcium tiles framed red",
        fontsize=10,
    )
    for panel, key in zip(
        fig.subfigures(len(examples), 1, squeeze=False)[:, 0], examples, strict=True
    ):
        _draw_example(panel, key, index, roots, grid)
    _save(fig, Path(out_png), dpi)
    return examples


def _draw_example(panel, key: tuple[str, str], index: Mapping, roots: Mapping, grid: int) -> None:
    """One patient's row: original, segmented with the tiles outlined, the tiles."""
    patient, slice_ = key
    original, segmented = index["original"][key][0], index["segmented"][key][0]
    tiles = index["cropped"][key]
    spec = panel.add_gridspec(grid, 2 + grid, width_ratios=[3, 3] + [3 / grid] * grid)
    panel.suptitle(f"{patient}, slice {slice_}", fontsize=9)
    ax = panel.add_subplot(spec[:, 0])
    ax.imshow(_grey(roots["original"] / original["path"]), cmap="gray", vmin=0, vmax=1)
    heart_box = _box(segmented)
    if heart_box is not None:
        ax.add_patch(_rectangle(heart_box, "yellow", 1.2))
    ax.set_title(f"original: {original['label']}", fontsize=8)
    ax.set_axis_off()
    ax = panel.add_subplot(spec[:, 1])
    image = _grey(roots["segmented"] / segmented["path"])
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    for tile in tiles:
        box = _tile_box_in_image(tile, heart_box, image.shape, grid)
        positive = tile["label"] == CALCIUM
        ax.add_patch(_rectangle(box, "red" if positive else "yellow", 1.8 if positive else 0.6))
    ax.set_title(f"segmented: {segmented['label']}", fontsize=8)
    ax.set_axis_off()
    for tile in tiles:
        n = int(tile["tile"]) - 1
        ax = panel.add_subplot(spec[n // grid, 2 + n % grid])
        ax.imshow(_grey(roots["cropped"] / tile["path"]), cmap="gray", vmin=0, vmax=1)
        positive = tile["label"] == CALCIUM
        title = f"tile {tile['tile']}"
        if positive and tile.get("cac_class"):
            title += f": {tile['cac_class']}"
        ax.set_title(title, fontsize=7, color="red" if positive else "black", pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("red" if positive else "0.6")
            spine.set_linewidth(3 if positive else 0.5)


def _tile_box_in_image(
    tile: Mapping, heart_box: tuple | None, shape: tuple[int, ...], grid: int
) -> tuple[float, float, float, float]:
    """A tile's box in the segmented image's pixels: from the boxes in slice pixels when the
    manifests give them, else an equal share of the grid."""
    height, width = shape[:2]
    box = _box(tile)
    if heart_box is not None and box is not None:
        row0, row1, col0, col1 = heart_box
        scale_r, scale_c = height / max(row1 - row0, 1), width / max(col1 - col0, 1)
        return (
            (box[0] - row0) * scale_r,
            (box[1] - row0) * scale_r,
            (box[2] - col0) * scale_c,
            (box[3] - col0) * scale_c,
        )
    n = int(tile["tile"]) - 1
    r, c = n // grid, n % grid
    return r * height / grid, (r + 1) * height / grid, c * width / grid, (c + 1) * width / grid


def _rectangle(box, colour: str, width: float) -> Rectangle:
    row0, row1, col0, col1 = box
    return Rectangle(
        (col0 - 0.5, row0 - 0.5), col1 - col0, row1 - row0,
        fill=False, edgecolor=colour, linewidth=width,
    )  # fmt: skip


def _by_slice(rows: Sequence[Mapping]) -> dict[tuple[str, str], list[Mapping]]:
    grouped: dict[tuple[str, str], list[Mapping]] = {}
    for row in rows:
        grouped.setdefault((row["patient_id"], row["slice"]), []).append(row)
    for members in grouped.values():
        members.sort(key=lambda r: int(r["tile"]))
    return grouped


def _box(row: Mapping) -> tuple[int, int, int, int] | None:
    """The image's box in slice pixels (row0, row1, col0, col1), when the manifest has it."""
    try:
        return tuple(int(float(row[c])) for c in ("row0", "row1", "col0", "col1"))
    except (KeyError, ValueError):
        return None


def _grey(path: Path) -> np.ndarray:
    """An 8-bit PNG as grey levels 0..1 (matplotlib reads PNGs as floats; the report env
    has no separate image library)."""
    return slice_grey(imread(path))


_save = save_figure
