"""What `cacflow predict` tells of one study: the record (``prediction.json``, schema
``workflow/schemas/prediction.schema.json``), its overlay of the slices with findings, and the
summary printed on the command line."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from cacflow import __version__
from cacflow.imaging.datasets import DatasetSettings
from cacflow.reporting.plotting import save_figure
from cacflow.scoring.arteries import ARTERIES, ARTERY_COLUMNS

# The stages whose seconds the record keeps, in the order they run.
STAGES = ("read", "model", "segmentation", "images", "classifier", "scoring", "overlay")

PREDICTION_JSON = "prediction.json"


OVERLAY_PNG = "overlay.png"


MAX_OVERLAY_SLICES = 16


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tiles(text: str) -> list[int]:
    return [int(t) for t in str(text or "").split(",") if t.strip()]


def _totals(row: Mapping) -> dict:
    return {
        "agatston": float(row["agatston"]),
        "volume_mm3": float(row["volume_mm3"]),
        "risk_category": str(row["risk_category"]),
        "n_lesions": int(row["n_lesions"]),
        "by_artery": {
            artery: float(row[column])
            for artery, column in zip(ARTERIES, ARTERY_COLUMNS, strict=True)
        },
        "n_vessels": int(row["n_vessels"]),
    }


def build_record(
    *,
    patient_id: str,
    pseudonymized: bool,
    model_path: Path,
    prep: Mapping,
    dataset_settings: DatasetSettings,
    threshold: float,
    volume,
    heart_mask: np.ndarray,
    images: list[dict],
    probabilities: np.ndarray,
    lesions: list[dict],
    kept: list[bool],
    classical: Mapping,
    hybrid: Mapping,
    notes: list[str],
) -> dict:
    """The content of prediction.json for one scored study."""
    instances = [int(n) for n in volume.instance_numbers]
    n_slices, n_rows, n_cols = volume.hu.shape
    kind = prep["dataset"]
    stored_size = {
        "original": [n_rows, n_cols],
        "segmented": [dataset_settings.segmented_size] * 2,
        "cropped": [dataset_settings.tile_size] * 2,
    }[kind]
    image_entries = [
        {
            "slice": int(row["slice"]),
            "tile": int(row["tile"]),
            "box": [int(row[k]) for k in ("row0", "row1", "col0", "col1")],
            "probability": round(float(p), 6),
            "calcium": bool(p >= threshold),
        }
        for row, p in zip(images, probabilities, strict=True)
    ]
    best: dict[int, float] = {}
    for entry in image_entries:
        best[entry["slice"]] = max(best.get(entry["slice"], 0.0), entry["probability"])
    lesion_entries = [
        {
            "slice": int(lesion["slice"]),
            "slice_index": int(lesion["slice_index"]),
            "centroid_row": float(lesion["centroid_row"]),
            "centroid_col": float(lesion["centroid_col"]),
            "area_mm2": float(lesion["area_mm2"]),
            "peak_hu": float(lesion["peak_hu"]),
            "weight": int(lesion["weight"]),
            "score": float(lesion["score"]),
            "volume_mm3": float(lesion["volume_mm3"]),
            "tiles": _tiles(lesion["tiles"]),
            "artery": str(lesion["artery"]),
            "kept_by_hybrid": bool(keep),
        }
        for lesion, keep in zip(lesions, kept, strict=True)
    ]
    has_heart = heart_mask.any(axis=(1, 2))
    slices = []
    for k, instance in enumerate(instances):
        mine = [e for e in lesion_entries if e["slice_index"] == k]
        probability = best.get(instance)
        slices.append(
            {
                "slice": instance,
                "slice_index": k,
                "heart": bool(has_heart[k]),
                "n_images": sum(1 for e in image_entries if e["slice"] == instance),
                "probability": probability,
                "calcium": probability is not None and probability >= threshold,
                "n_lesions": len(mine),
                "classical_score": round(float(sum(e["score"] for e in mine)), 4),
            }
        )
    return {
        "cacflow_version": __version__,
        "patient_id": patient_id,
        "pseudonymized": bool(pseudonymized),
        "model": {
            "path": str(Path(model_path).resolve()),
            "file": Path(model_path).name,
            "sha256": _sha256(Path(model_path)),
            "network": str(prep["model"]),
            "dataset": kind,
            "trained_with_cacflow": str(prep.get("cacflow_version", "")),
        },
        "preprocessing": {
            "dataset": kind,
            "image_size": int(prep["image_size"]),
            "channels": int(prep["channels"]),
            "stored_image_size": stored_size,
            "window_center_hu": float(dataset_settings.window_center_hu),
            "window_width_hu": float(dataset_settings.window_width_hu),
            "segmented_size": int(dataset_settings.segmented_size),
            "tile_size": int(dataset_settings.tile_size),
            "grid": int(dataset_settings.grid),
            "cropped_context": str(dataset_settings.cropped_context),
            "slab": int(dataset_settings.slab),
        },
        "threshold": float(threshold),
        "study": {
            "n_slices": int(n_slices),
            "rows": int(n_rows),
            "columns": int(n_cols),
            "pixel_spacing_mm": [float(v) for v in volume.pixel_spacing_mm],
            "slice_spacing_mm": float(volume.slice_spacing_mm),
            "slice_thickness_mm": float(volume.slice_thickness_mm),
            "n_heart_slices": int(has_heart.sum()),
            "n_images": len(image_entries),
            "n_images_calcium": sum(e["calcium"] for e in image_entries),
        },
        "slices": slices,
        "images": image_entries,
        "lesions": lesion_entries,
        "totals": {
            "classical": _totals(classical),
            "hybrid": {**_totals(hybrid), "method": str(hybrid["method"])},
        },
        "notes": notes,
        "seconds": {},
    }


def write_record(path: Path, record: Mapping) -> None:
    partial = path.with_name(path.name + ".part")
    try:
        partial.write_text(json.dumps(record, indent=1, allow_nan=False) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


# The overlay ----------------------------------------------------------------------------
def overlay_slices(record: Mapping, limit: int = MAX_OVERLAY_SLICES) -> tuple[list[int], int]:
    """Slice indices to draw and how many slices have findings. Findings: a classical lesion
    or an image called calcium; beyond `limit`, those with the highest score, then
    probability. Without findings, up to four heart slices spread over the heart."""
    slices = record["slices"]
    found = [s for s in slices if s["n_lesions"] or s["calcium"]]
    if not found:
        heart = [s["slice_index"] for s in slices if s["heart"]] or [
            s["slice_index"] for s in slices
        ]
        picks = np.linspace(0, len(heart) - 1, num=min(4, len(heart))).round().astype(int)
        return sorted({heart[i] for i in picks}), 0
    ranked = sorted(found, key=lambda s: (-s["classical_score"], -(s["probability"] or 0.0)))
    return sorted(s["slice_index"] for s in ranked[:limit]), len(found)


def draw_overlay(
    out_png: Path,
    record: Mapping,
    hu: np.ndarray,
    heart_mask: np.ndarray,
    dataset_settings: DatasetSettings,
    pixel_spacing_mm: tuple[float, float],
    dpi: int = 100,
) -> None:
    """A montage of the slices with findings, written atomically: the slice in the model's
    window, cropped to the heart; heart mask outline green; classical lesions circled, red
    when the hybrid score keeps them, yellow when not; images called calcium framed cyan."""
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Rectangle

    from cacflow.imaging.windowing import window_to_uint8

    picks, n_found = overlay_slices(record)
    n_cols = min(4, len(picks))
    n_rows = math.ceil(len(picks) / n_cols)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.2 * n_cols, 3.4 * n_rows + 0.9), squeeze=False
    )
    totals = record["totals"]
    shown = (
        f"{len(picks)} of {n_found} slices with findings"
        if n_found
        else "no findings: heart slices shown"
    )
    fig.suptitle(
        f"{record['patient_id']}: classical {totals['classical']['agatston']:.1f} "
        f"({totals['classical']['risk_category']}), hybrid {totals['hybrid']['agatston']:.1f} "
        f"({totals['hybrid']['risk_category']}); {record['model']['network']} on "
        f"{record['preprocessing']['dataset']} images, threshold {record['threshold']:g}\n"
        f"{shown}. Lesions: red kept by hybrid, yellow not; cyan: image called calcium",
        fontsize=8,
    )
    window = _view_box(heart_mask, hu.shape[1:])
    aspect = float(pixel_spacing_mm[0]) / float(pixel_spacing_mm[1])
    pixel_area = float(pixel_spacing_mm[0]) * float(pixel_spacing_mm[1])
    r0, r1, c0, c1 = window
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, k in zip(axes.ravel(), picks, strict=False):
        entry = record["slices"][k]
        grey = window_to_uint8(
            hu[k], dataset_settings.window_center_hu, dataset_settings.window_width_hu
        )
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255, aspect=aspect, interpolation="nearest")
        if heart_mask[k].any():
            ax.contour(heart_mask[k], levels=[0.5], colors="lime", linewidths=0.6)
        for image in record["images"]:
            if image["slice"] != entry["slice"] or not image["calcium"]:
                continue
            b0, b1, d0, d1 = image["box"]
            ax.add_patch(
                Rectangle((d0 - 0.5, b0 - 0.5), d1 - d0, b1 - b0, fill=False, color="cyan", lw=1.2)
            )
        for lesion in record["lesions"]:
            if lesion["slice_index"] != k:
                continue
            radius = math.sqrt(lesion["area_mm2"] / pixel_area / math.pi) + 3.0
            ax.add_patch(
                Circle(
                    (lesion["centroid_col"], lesion["centroid_row"]),
                    radius,
                    fill=False,
                    color="red" if lesion["kept_by_hybrid"] else "yellow",
                    lw=1.0,
                )
            )
        ax.set_xlim(c0 - 0.5, c1 - 0.5)
        ax.set_ylim(r1 - 0.5, r0 - 0.5)
        probability = entry["probability"]
        p_text = f"P {probability:.2f}" if probability is not None else "no image"
        ax.set_title(
            f"slice {entry['slice']}: {entry['n_lesions']} lesions, "
            f"{entry['classical_score']:.1f}; {p_text}",
            fontsize=7,
        )
    fig.tight_layout()
    save_figure(fig, out_png, dpi)


def _view_box(heart_mask: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The heart's bounding box over all slices with a 15 % margin (whole slice without a
    heart), as (row0, row1, col0, col1)."""
    n_rows, n_cols = shape
    if not heart_mask.any():
        return 0, n_rows, 0, n_cols
    rows = np.flatnonzero(heart_mask.any(axis=(0, 2)))
    cols = np.flatnonzero(heart_mask.any(axis=(0, 1)))
    side = max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1
    margin = int(0.15 * side)
    return (
        max(0, int(rows[0]) - margin),
        min(n_rows, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(n_cols, int(cols[-1]) + 1 + margin),
    )


def summary_lines(record: Mapping) -> list[str]:
    """The short human summary `cacflow predict` prints."""
    study, totals, seconds = record["study"], record["totals"], record["seconds"]
    classical, hybrid = totals["classical"], totals["hybrid"]
    stages = ", ".join(f"{stage} {seconds[stage]:.1f}" for stage in STAGES if stage in seconds)
    return [
        (
            f"patient {record['patient_id']}: {study['n_slices']} slices, heart on "
            f"{study['n_heart_slices']}"
        ),
        (
            f"model {record['model']['network']} on {record['preprocessing']['dataset']} "
            f"images at {record['preprocessing']['image_size']} px: "
            f"{study['n_images_calcium']} of {study['n_images']} images called calcium "
            f"(P >= {record['threshold']:g})"
        ),
        (
            f"classical Agatston {classical['agatston']:.1f} ({classical['risk_category']}, "
            f"{classical['n_lesions']} lesions; "
            + ", ".join(f"{a} {v:.1f}" for a, v in classical["by_artery"].items())
            + ")"
        ),
        (
            f"hybrid Agatston {hybrid['agatston']:.1f} ({hybrid['risk_category']}, "
            f"{hybrid['n_lesions']} lesions)"
        ),
        f"seconds: {stages}; total {seconds['total']:.1f}",
    ]
