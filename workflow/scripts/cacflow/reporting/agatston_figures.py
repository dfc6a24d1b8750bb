"""Report figures of the Agatston stage, one panel per scoring method, side by side:
predicted against true score (log(1 + score) axes, risk-category bounds dashed), and the
Bland-Altman plot of method - truth against their mean (Bland & Altman, Lancet 1986)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from cacflow.reporting.plotting import save_figure
from cacflow.scoring.agreement import bland_altman, has_truth

# Upper bounds of the risk categories 0, 1-10, 11-100, 101-400.
CATEGORY_BOUNDS = (0.5, 10.5, 100.5, 400.5)
TICKS = (0, 10, 100, 400, 1000, 4000, 10000)


def scores_by_method(score_rows: Iterable[Mapping]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """method -> (predicted, truth) over the patients with a truth, in table order."""
    pairs: dict[str, tuple[list[float], list[float]]] = {}
    for row in score_rows:
        predicted, truth = pairs.setdefault(str(row["method"]), ([], []))
        if has_truth(row):
            predicted.append(float(row["agatston"]))
            truth.append(float(row["truth_agatston"]))
    return {m: (np.array(p, dtype=float), np.array(t, dtype=float)) for m, (p, t) in pairs.items()}


def _panels(n: int) -> tuple[plt.Figure, np.ndarray]:
    n = max(n, 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    return fig, axes[0]


def draw_scatter(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], out_png: Path) -> None:
    fig, axes = _panels(len(scores))
    for ax, (method, (predicted, truth)) in zip(axes, scores.items(), strict=False):
        x, y = np.log1p(truth), np.log1p(predicted)
        top = max(float(np.max(x, initial=0)), float(np.max(y, initial=0)), np.log1p(1000)) * 1.05
        for bound in CATEGORY_BOUNDS:
            ax.axvline(np.log1p(bound), color="0.85", linestyle="--", linewidth=0.8)
            ax.axhline(np.log1p(bound), color="0.85", linestyle="--", linewidth=0.8)
        ax.plot([0, top], [0, top], color="0.5", linewidth=0.8)
        ax.scatter(x, y, s=14, alpha=0.7)
        ax.set_xlim(-0.1, top)
        ax.set_ylim(-0.1, top)
        ax.set_aspect("equal")
        ticks = [t for t in TICKS if np.log1p(t) <= top]
        ax.set_xticks(np.log1p(ticks), [str(t) for t in ticks])
        ax.set_yticks(np.log1p(ticks), [str(t) for t in ticks])
        ax.set_xlabel("true Agatston score (log(1 + score) axis)")
        ax.set_ylabel("method's Agatston score (log(1 + score) axis)")
        ax.set_title(f"{method} (n = {len(truth)})", fontsize=10)
    if not scores:
        _no_data(axes[0])
    _save(fig, out_png)


def draw_bland_altman(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], out_png: Path) -> None:
    fig, axes = _panels(len(scores))
    for ax, (method, (predicted, truth)) in zip(axes, scores.items(), strict=False):
        ax.set_title(f"{method} (n = {len(truth)})", fontsize=10)
        ax.set_xlabel("mean of method and truth (Agatston)")
        ax.set_ylabel("method - truth (Agatston)")
        if len(truth) == 0:
            _no_data(ax)
            continue
        ax.scatter((predicted + truth) / 2, predicted - truth, s=14, alpha=0.7)
        limits = bland_altman(predicted, truth)
        ax.axhline(0, color="0.7", linewidth=0.8)
        lines = (("mean", limits.mean, "-"), ("-1.96 SD", limits.loa_low, "--"))
        for label, value, style in (*lines, ("+1.96 SD", limits.loa_high, "--")):
            if np.isfinite(value):
                ax.axhline(value, color="C3", linestyle=style, linewidth=1)
                ax.annotate(
                    f"{label} {value:.1f}",
                    (1, value),
                    xycoords=("axes fraction", "data"),
                    ha="right",
                    va="bottom",
                    fontsize=8,
                    color="C3",
                )
    if not scores:
        _no_data(axes[0])
    _save(fig, out_png)


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "no patients with a true score", ha="center", va="center")


def _save(fig: plt.Figure, out_png: Path) -> None:
    fig.tight_layout()
    save_figure(fig, out_png)
