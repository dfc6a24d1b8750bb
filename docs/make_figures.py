"""Regenerate the figures of the documentation from the workflow itself.

Run from anywhere with the project's Python (`make docs`); needs Graphviz `dot` on PATH.

- docs/rulegraph.svg, .png: the rules of the default run (Snakemake's rule graph).
- docs/synthetic_montage.png: twelve slices of one synthetic patient, top to bottom.
- docs/synthetic_truth.png: three slices of that patient with its truth maps overlaid.
- docs/segmentation.png: the heart segmentation (K-means + morphology) beside the truth.
- docs/datasets.png: one slice as the three datasets (original, segmented, 3x3 cropped).
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on build machines

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from PIL import Image

from cacflow.imaging.datasets import DatasetSettings, build_patient_datasets
from cacflow.imaging.labels import SliceLabel
from cacflow.imaging.segmentation import segment_heart, segmentation_scores
from cacflow.imaging.volume import Volume
from cacflow.patients import synthetic_patient_ids
from cacflow.synthetic.synth import (
    SimulatedPatient,
    SynthSettings,
    simulate_patient,
    truth_summary,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = REPO_ROOT / "docs"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"

# The figures show the synthetic cohort as the workflow makes it by default.
FIGURE_SETTINGS = SynthSettings(seed=2021, size=512)
CANDIDATE_PATIENTS = synthetic_patient_ids(10)
WINDOW_CENTER_HU, WINDOW_WIDTH_HU = 40.0, 400.0  # mediastinal window
MONTAGE_ROWS, MONTAGE_COLS = 3, 4
DPI = 80


def make_rulegraph() -> None:
    """docs/rulegraph.svg and .png: the rules of the default run and how they depend."""
    dot_source = subprocess.run(
        [str(SNAKEMAKE), "--rulegraph"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for fmt in ("svg", "png"):
        out = DOCS_DIR / f"rulegraph.{fmt}"
        subprocess.run(["dot", f"-T{fmt}", "-o", str(out)], input=dot_source, check=True, text=True)
        print(f"wrote {out.relative_to(REPO_ROOT)}")


def first_patient_with_coronary_calcium(settings: SynthSettings) -> SimulatedPatient:
    """The first of SYN0001..SYN0010 whose truth holds a coronary lesion."""
    for patient_id in CANDIDATE_PATIENTS:
        patient = simulate_patient(patient_id, settings)
        if patient.volume.lesion_labels.any():
            return patient
    raise RuntimeError(
        f"none of {CANDIDATE_PATIENTS[0]}..{CANDIDATE_PATIENTS[-1]} (seed {settings.seed}) "
        "has coronary calcium"
    )


def make_montage(patient: SimulatedPatient | None = None) -> None:
    """docs/synthetic_montage.png: 12 slices evenly spaced from the top to the bottom."""
    if patient is None:
        patient = first_patient_with_coronary_calcium(FIGURE_SETTINGS)
    vol, acq = patient.volume, patient.acquisition
    n_panels = MONTAGE_ROWS * MONTAGE_COLS
    indices = np.linspace(0, acq.n_slices - 1, n_panels).round().astype(int)
    fig, axes = plt.subplots(
        MONTAGE_ROWS, MONTAGE_COLS, figsize=(3 * MONTAGE_COLS, 3.2 * MONTAGE_ROWS)
    )
    for ax, k in zip(axes.flat, indices, strict=True):
        _show_slice(ax, vol.hu[k])
        ax.set_title(f"slice {k + 1}, z = {vol.slice_z_mm[k]:.1f} mm", fontsize=9)
    fig.suptitle(
        f"{patient.patient_id} (seed {FIGURE_SETTINGS.seed}): {acq.n_slices} slices of "
        f"{acq.slice_thickness_mm:g} mm, {acq.size} px at {acq.pixel_spacing_mm:.2f} mm, "
        f"W{WINDOW_WIDTH_HU:g}/L{WINDOW_CENTER_HU:g}",
        fontsize=10,
    )
    fig.tight_layout()
    _save(fig, DOCS_DIR / "synthetic_montage.png")


def truth_slices(patient: SimulatedPatient) -> list[tuple[str, int]]:
    """An upper-heart slice, the lesion slice nearest mid-heart, and a low slice."""
    vol = patient.volume
    heart = np.flatnonzero(vol.heart_mask.any(axis=(1, 2)))
    lesion = np.flatnonzero(vol.lesion_labels.any(axis=(1, 2)))
    top, bottom = heart[0], heart[-1]
    middle = (top + bottom) / 2.0
    lesion_slice = int(lesion[np.argmin(np.abs(lesion - middle))])
    upper = round(top + 0.15 * (bottom - top))
    low = round(top + 0.85 * (bottom - top))
    # Three different levels even when the lesion sits high or low in the heart.
    upper = min(upper, max(top, lesion_slice - 3))
    low = max(low, min(bottom, lesion_slice + 3))
    return [("upper heart", upper), ("coronary lesion", lesion_slice), ("low", low)]


def make_truth_overlay(patient: SimulatedPatient | None = None) -> None:
    """docs/synthetic_truth.png: heart mask, coronary lesions and other calcium on 3 slices."""
    if patient is None:
        patient = first_patient_with_coronary_calcium(FIGURE_SETTINGS)
    vol = patient.volume
    chosen = truth_slices(patient)
    fig, axes = plt.subplots(1, len(chosen), figsize=(4.2 * len(chosen), 4.8))
    for ax, (what, k) in zip(axes, chosen, strict=True):
        _show_slice(ax, vol.hu[k])
        if vol.heart_mask[k].any():
            ax.contour(vol.heart_mask[k], levels=[0.5], colors="red", linewidths=1.0)
        # Lesions are a few pixels wide: fill them and ring them so they survive the dpi.
        for mask, colour in (
            (vol.lesion_labels[k] > 0, "yellow"),
            (vol.noncoronary_calcium[k], "cyan"),
        ):
            if mask.any():
                ax.imshow(
                    np.ma.masked_where(~mask, mask), cmap=_solid(colour), interpolation="nearest"
                )
                ax.contour(mask, levels=[0.5], colors=colour, linewidths=1.5)
        n_lesions = len(np.unique(vol.lesion_labels[k])) - 1
        ax.set_title(
            f"{what}: slice {k + 1}, z = {vol.slice_z_mm[k]:.1f} mm"
            + (f"\n{n_lesions} coronary lesion(s)" if n_lesions else "\n"),
            fontsize=9,
        )
    handles = [
        Line2D([], [], color="red", label="heart mask"),
        Patch(color="yellow", label="coronary lesion"),
        Patch(color="cyan", label="non-coronary calcium"),
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle(f"{patient.patient_id}: truth maps on the image", fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.93))  # room for legend and title
    _save(fig, DOCS_DIR / "synthetic_truth.png")


def make_segmentation_figure(patient: SimulatedPatient, heart_mask: np.ndarray) -> None:
    """docs/segmentation.png: predicted and true heart masks from the top to below the heart."""
    vol, acq = patient.volume, patient.acquisition
    heart = np.flatnonzero(vol.heart_mask.any(axis=(1, 2)))
    picks = [heart[0], *np.linspace(heart[0], heart[-1], 5)[1:-1].round().astype(int)]
    picks += [heart[-1], min(heart[-1] + 3, acq.n_slices - 1)]
    fig, axes = plt.subplots(2, 3, figsize=(11, 9.2))
    for ax, k in zip(axes.flat, picks, strict=True):
        _show_slice(ax, vol.hu[k])
        for mask, colour in ((vol.heart_mask[k], "red"), (heart_mask[k], "lime")):
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=colour, linewidths=1.2)
        true, pred = vol.heart_mask[k], heart_mask[k]
        dice = 2 * (true & pred).sum() / max(true.sum() + pred.sum(), 1)
        what = (
            f"Dice {dice:.3f}"
            if true.any()
            else "no heart: " + ("mask empty" if not pred.any() else f"{pred.sum()} px masked")
        )
        ax.set_title(f"slice {k + 1}: {what}", fontsize=9)
    scores = segmentation_scores(
        heart_mask, vol.heart_mask, vol.hu, vol.lesion_labels, vol.lesion_kind,
        acq.pixel_spacing_mm,
    )  # fmt: skip
    handles = [Line2D([], [], color="red", label="truth"), Line2D([], [], color="lime",
               label="segmentation")]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False, fontsize=9)
    fig.suptitle(
        f"{patient.patient_id}: heart segmentation; mean Dice on heart slices "
        f"{scores['dice_heart_slices']:.3f}, coronary lesions inside "
        f"{scores['n_lesions_inside']}/{scores['n_lesions']}",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    _save(fig, DOCS_DIR / "segmentation.png")


def make_datasets_figure(patient: SimulatedPatient, heart_mask: np.ndarray) -> None:
    """docs/datasets.png: a calcium slice as the original, segmented and cropped images."""
    vol, acq = patient.volume, patient.acquisition
    _, calcium = truth_summary(patient)
    k = truth_slices(patient)[1][1]
    instances = np.arange(1, acq.n_slices + 1)
    labels = {int(n): SliceLabel(bool(c)) for n, c in zip(instances, calcium, strict=True)}
    coronary = np.array([kind == "coronary" for kind in vol.lesion_kind])[vol.lesion_labels]
    one_slice = Volume(
        hu=vol.hu[k : k + 1],
        pixel_spacing_mm=(acq.pixel_spacing_mm, acq.pixel_spacing_mm),
        slice_spacing_mm=acq.slice_thickness_mm,
        slice_thickness_mm=acq.slice_thickness_mm,
        instance_numbers=instances[k : k + 1],
        positions_mm=acq.slice_z_mm()[k : k + 1],
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = build_patient_datasets(
            Path(tmp), patient.patient_id, one_slice, heart_mask[k : k + 1], labels,
            coronary[k : k + 1], DatasetSettings(),
        )  # fmt: skip
        images = {
            name: [(row, np.asarray(Image.open(Path(tmp) / name / row["path"])))
                   for row in result.rows[name]]
            for name in ("original", "segmented", "cropped")
        }  # fmt: skip
    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(3, 5, width_ratios=[3, 3, 1, 1, 1])
    for column, name in enumerate(("original", "segmented")):
        ax = fig.add_subplot(grid[:, column])
        row, image = images[name][0]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"{name} ({image.shape[1]} px): {row['label']}", fontsize=9)
        ax.set_axis_off()
    for n, (row, image) in enumerate(images["cropped"]):
        ax = fig.add_subplot(grid[n // 3, 2 + n % 3])
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        positive = row["label"] == "calcium"
        ax.set_title(f"tile {row['tile']}" + (f": {row['cac_class']}" if positive else ""),
                     fontsize=8, color="red" if positive else "black")  # fmt: skip
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("red" if positive else "grey")
            spine.set_linewidth(2.5 if positive else 0.5)
    fig.suptitle(
        f"{patient.patient_id} slice {k + 1}: the paper's three datasets (window "
        f"-250..550 HU); calcium tiles framed red",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    _save(fig, DOCS_DIR / "datasets.png")


def _show_slice(ax, hu: np.ndarray) -> None:
    low = WINDOW_CENTER_HU - WINDOW_WIDTH_HU / 2.0
    ax.imshow(hu, cmap="gray", vmin=low, vmax=low + WINDOW_WIDTH_HU, interpolation="antialiased")
    ax.set_axis_off()


def _solid(colour: str):
    return matplotlib.colors.ListedColormap([colour])


def _save(fig, path: Path) -> None:
    partial = path.with_name(path.stem + ".part" + path.suffix)  # keeps the .png suffix
    fig.savefig(partial, dpi=DPI)
    plt.close(fig)
    os.replace(partial, path)
    print(f"wrote {path.relative_to(REPO_ROOT)} ({path.stat().st_size // 1024} KB)")


def main() -> None:
    make_rulegraph()
    patient = first_patient_with_coronary_calcium(FIGURE_SETTINGS)
    make_montage(patient)
    make_truth_overlay(patient)
    acq = patient.acquisition
    heart_mask = segment_heart(patient.volume.hu, acq.pixel_spacing_mm, acq.slice_thickness_mm)
    make_segmentation_figure(patient, heart_mask)
    make_datasets_figure(patient, heart_mask)


if __name__ == "__main__":
    main()
