"""Writing matplotlib figures: the Agg backend (no display on build machines and cluster
nodes) and an atomic save, so a killed job never leaves half a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt


def save_figure(fig: plt.Figure, out_png: Path, dpi: int = 100) -> None:
    """`fig` as a PNG at `out_png` (written to a temporary name, then renamed), then closed."""
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    partial = out_png.with_name(out_png.name + ".part")
    try:
        fig.savefig(partial, format="png", dpi=dpi)
        os.replace(partial, out_png)
    finally:
        plt.close(fig)
        partial.unlink(missing_ok=True)
