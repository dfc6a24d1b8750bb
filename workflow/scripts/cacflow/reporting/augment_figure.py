"""The report figure of the augmentation stage: per dataset and class, training images beside
augmented copies of them, with the label each augmented copy keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from cacflow.imaging.png import slice_grey
from cacflow.reporting.plotting import save_figure

CLASSES = ("calcium", "no_calcium")


def pick_examples(augmented_rows: Sequence[Mapping], per_class: int) -> dict[str, list[Mapping]]:
    """The first `per_class` augmented rows of each class (manifest order: deterministic)."""
    return {c: [r for r in augmented_rows if r["label"] == c][:per_class] for c in CLASSES}


def draw_augmentation_figure(
    datasets: Mapping[str, tuple[Path, Path, Sequence[Mapping]]],
    out_png: Path,
    per_class: int = 2,
) -> None:
    """`datasets`: name -> (dataset folder, augmented folder, augmented manifest rows)."""
    n_rows = len(datasets) * len(CLASSES)
    fig, axes = plt.subplots(
        n_rows, 2 * per_class, figsize=(2.2 * 2 * per_class, 2.3 * n_rows), squeeze=False
    )
    for d, (name, (dataset_root, augmented_root, rows)) in enumerate(datasets.items()):
        examples = pick_examples(rows, per_class)
        for c, label in enumerate(CLASSES):
            line = axes[d * len(CLASSES) + c]
            line[0].set_ylabel(f"{name}\n{label}", fontsize=9)
            for k in range(per_class):
                source_ax, augmented_ax = line[2 * k], line[2 * k + 1]
                for ax in (source_ax, augmented_ax):
                    ax.set_xticks([])
                    ax.set_yticks([])
                if k >= len(examples[label]):
                    source_ax.text(0.5, 0.5, "none", ha="center", va="center")
                    continue
                row = examples[label][k]
                source_ax.imshow(_grey(Path(dataset_root) / row["source_path"]), cmap="gray")
                source_ax.set_title("training image", fontsize=8)
                augmented_ax.imshow(_grey(Path(augmented_root) / row["path"]), cmap="gray")
                augmented_ax.set_title(
                    f"augmented: {row['label']}\nlesion {float(row['lesion_area_mm2']):.1f} mm²",
                    fontsize=8,
                )
    fig.tight_layout()
    save_figure(fig, out_png)


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return slice_grey(np.asarray(image))
