"""The evaluation figures of the report: ROC curves (Fawcett 2006) of the models per dataset,
confusion matrices, training curves from Keras' CSVLogger history, and Grad-CAM examples
(Selvaraju et al. 2017; maps from cacflow.learning.gradcam).

Functions take arrays (or a history CSV) and an output path; each figure is saved under a
temporary name in the output's folder and renamed, so a killed job leaves no partial PNG.
Class conventions are those of cacflow.reporting.metrics (1 = calcium, calcium called when
P(calcium) > threshold).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import roc_curve

from cacflow.imaging.png import slice_grey
from cacflow.reporting.metrics import as_binary_labels, confusion_matrix, outcome_kinds, select_rows
from cacflow.reporting.plotting import save_figure

CLASS_NAMES = ("no_calcium", "calcium")


_save = save_figure


def plot_roc_curves(
    curves: Mapping[str, Mapping[str, tuple[ArrayLike, ArrayLike]]], out_png: Path
) -> None:
    """One axes per dataset with the ROC curve of each model; `curves` is dataset -> model
    -> (labels, probabilities). The legend gives each model's AUC ("n/a" with one class)."""
    n = max(len(curves), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for ax, (dataset, models) in zip(axes[0], curves.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
        for model, (labels, probabilities) in models.items():
            y = as_binary_labels(labels)
            p = np.asarray(probabilities, dtype=np.float64).ravel()
            if len(np.unique(y)) < 2:
                ax.plot([], [], label=f"{model} (AUC n/a: one class)")
                continue
            fpr, tpr, _ = roc_curve(y, p)
            auc = float(np.trapezoid(tpr, fpr))
            ax.plot(fpr, tpr, linewidth=1.5, label=f"{model} (AUC {auc:.3f})")
        ax.set(
            title=dataset,
            xlabel="1 - specificity",
            ylabel="sensitivity",
            xlim=(0, 1),
            ylim=(0, 1.01),
            aspect="equal",
        )
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    _save(fig, out_png)


def confusions_from_rows(
    rows: Iterable[Mapping], split: str = "test", level: str = "image"
) -> dict[str, dict[str, np.ndarray]]:
    """dataset -> model -> [[tn, fp], [fn, tp]] from rows of results/metrics.tsv."""
    matrices: dict[str, dict[str, np.ndarray]] = {}
    for row in select_rows(rows, split, level):
        matrices.setdefault(row["dataset"], {})[row["model"]] = confusion_matrix(row)
    return matrices


def plot_confusion_matrices(matrices: Mapping[str, Mapping[str, ArrayLike]], out_png: Path) -> None:
    """A grid, datasets down and models across, of 2 x 2 confusion matrices
    [[tn, fp], [fn, tp]] (rows true class, columns called class), each cell with its count
    and its percentage of the true class."""
    models = list(dict.fromkeys(m for by_model in matrices.values() for m in by_model))
    n_rows, n_cols = max(len(matrices), 1), max(len(models), 1)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 3.0 * n_rows), squeeze=False)
    for r, (dataset, by_model) in enumerate(matrices.items()):
        for c, model in enumerate(models):
            ax = axes[r, c]
            if model not in by_model:
                ax.axis("off")
                continue
            counts = np.asarray(by_model[model], dtype=np.int64).reshape(2, 2)
            totals = counts.sum(axis=1, keepdims=True)
            share = np.divide(counts, totals, out=np.zeros((2, 2)), where=totals > 0)
            ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
            for i in range(2):
                for j in range(2):
                    ax.text(
                        j,
                        i,
                        f"{counts[i, j]}\n{100 * share[i, j]:.1f} %",
                        ha="center",
                        va="center",
                        color="white" if share[i, j] > 0.6 else "black",
                        fontsize=9,
                    )
            ax.set_xticks([0, 1], CLASS_NAMES, fontsize=8)
            ax.set_yticks([0, 1], CLASS_NAMES, fontsize=8, rotation=90, va="center")
            ax.set_xlabel("called", fontsize=8)
            ax.set_ylabel(f"{dataset}\ntrue", fontsize=8)
            ax.set_title(model, fontsize=9)
    fig.tight_layout()
    _save(fig, out_png)


def read_history(history_csv: Path) -> dict[str, np.ndarray]:
    """The columns of a Keras CSVLogger file as float arrays (empty cells are NaN)."""
    with open(history_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = rows[0].keys() if rows else []
    return {
        name: np.array(
            [float(row[name]) if row[name] not in ("", None) else np.nan for row in rows]
        )
        for name in columns
    }


def plot_training_curves(history_csv: Path, out_png: Path, title: str | None = None) -> None:
    """Loss and accuracy panels, training and validation, per epoch (CSVLogger counts
    epochs from 0; shown from 1). Missing validation columns are left out."""
    history = read_history(history_csv)
    epochs = history.get("epoch", np.arange(len(next(iter(history.values()), []))))
    epochs = epochs + 1
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    for ax, metric in zip(axes[0], ("loss", "accuracy"), strict=True):
        for name, label in ((metric, "training"), (f"val_{metric}", "validation")):
            if name in history:
                ax.plot(epochs, history[name], marker="o", markersize=3, label=label)
        ax.set(xlabel="epoch", ylabel=metric, title=metric)
        if metric == "accuracy":
            ax.set_ylim(0, 1.02)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out_png)


def plot_gradcam_grid(
    images: ArrayLike,
    heatmaps: ArrayLike,
    labels: ArrayLike,
    probabilities: ArrayLike,
    out_png: Path,
    threshold: float = 0.5,
    columns: int = 4,
) -> None:
    """Each image (n, height, width) or (n, height, width, channels), in grey, with its
    heat map (n, height, width, in [0, 1]) overlaid in the jet colours, more opaque where
    higher; titled TP/FP/FN/TN and P(calcium)."""
    images = np.asarray(images, dtype=np.float32)
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    kinds = outcome_kinds(labels, probabilities, threshold)
    n = len(images)
    n_cols = max(1, min(columns, n))
    n_rows = max(1, -(-n // n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(2.6 * n_cols, 2.8 * n_rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, ax in enumerate(axes.ravel()[:n]):
        ax.imshow(slice_grey(images[i]), cmap="gray")
        # Opacity grows with the map, so the image stays readable where the map is low.
        heat = np.clip(heatmaps[i], 0.0, 1.0)
        overlay = plt.get_cmap("jet")(heat)
        overlay[..., 3] = 0.6 * heat
        ax.imshow(overlay)
        ax.set_title(f"{kinds[i]}  P(calcium) {probabilities[i]:.2f}", fontsize=9)
    fig.tight_layout()
    _save(fig, out_png)
