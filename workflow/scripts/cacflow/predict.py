"""Score one new study with a trained model, outside Snakemake (`cacflow predict`).

The same code as the workflow, in the same order:

1. ingest (`cacflow.pipeline.read_checked_study`): the same checks, PHI guard and one-line
   reasons; a refused study raises its `cacflow.ingest.IngestError` (before TensorFlow is
   imported or the model read: only a missing model file is reported earlier);
2. the rest of the workflow's per-patient chain (`cacflow.pipeline.process_volume`): heart
   segmentation, the image datasets and the classical Agatston score inside the heart mask.
   The images are made with the window, sizes and grid stored inside the model
   (``cacflow.json``, written by `cacflow.training.save_model`). The model's preprocessing
   wins over any config: a model cannot be paired with images made otherwise, and a
   ``.keras`` without ``cacflow.json`` is refused (`UnusableModelError`);
3. the classifier on every image of the model's dataset, batched, through the training input
   pipeline (`cacflow.inputs.build_pipeline`: PNG grey levels, area resize to the model's
   input, / 255, repeated to its channels);
4. the hybrid score (`cacflow.scoring.hybrid_scores`: the classical lesions shown by an image
   the model calls calcium, P >= threshold).

Outputs in ``out_dir``, each written atomically (temporary name, then rename):

- ``prediction.json`` (schema ``workflow/schemas/prediction.schema.json``): versions, model,
  preprocessing, the study's geometry, P(calcium) per image and per slice, the lesions with
  their images and whether the hybrid score keeps them, classical and hybrid totals with risk
  categories, and the seconds of each stage (``model`` includes importing TensorFlow when
  it is the process's first use);
- ``overlay.png``: the slices with findings (lesions circled, images called calcium framed);
- ``images/<dataset>/`` only with ``keep_images``: the PNGs the model saw and their manifest.

The patient is named by the folder name, or with ``ingest.pseudonymize`` by the keyed
pseudonym of `cacflow.patients.pseudonym`; nothing read from a DICOM identity tag, nor the
study's path, is written. Earlier ``prediction.json``/``overlay.png`` in ``out_dir`` are
removed first, so a refused study leaves none behind.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hashlib
import json
import math
import shutil
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from . import __version__
from .datasets import DATASETS, MANIFEST_COLUMNS, DatasetSettings
from .ingest import IngestSettings, volume_of
from .patients import pseudonym
from .pipeline import StudySettings, process_volume, read_checked_study
from .plotting import save_figure
from .scoring import (
    DEFAULT_HYBRID_THRESHOLD,
    ScoringSettings,
    hybrid_scores,
    patient_row,
)
from .tables import write_tsv

PREDICTION_JSON = "prediction.json"
OVERLAY_PNG = "overlay.png"
MAX_OVERLAY_SLICES = 16
STAGES = ("read", "model", "segmentation", "images", "classifier", "scoring", "overlay")


class UnusableModelError(ValueError):
    """The model file is missing, is not a cacflow model (no cacflow.json), or does not
    match the preprocessing stored in it."""


@dataclass
class Prediction:
    """What `predict_study` wrote: the content of prediction.json and the files."""

    record: dict
    json_path: Path
    overlay_path: Path
    notes: list[str] = field(default_factory=list)


# The model ------------------------------------------------------------------------------
def model_preprocessing(model_path: Path) -> dict:
    """The preprocessing stored in a cacflow ``model.keras``, checked for what predict needs."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise UnusableModelError(f"{model_path}: model file not found")
    from .training import TrainingError, read_preprocessing  # imports TensorFlow

    try:
        prep = read_preprocessing(model_path)
    except TrainingError as error:
        raise UnusableModelError(str(error)) from None
    except (ValueError, OSError) as error:  # unreadable JSON, a broken archive member
        raise UnusableModelError(f"{model_path}: unreadable cacflow.json ({error})") from None
    problems = []
    if prep.get("dataset") not in DATASETS:
        problems.append(f"dataset {prep.get('dataset')!r} is not one of {list(DATASETS)}")
    for key in ("image_size", "channels"):
        if not isinstance(prep.get(key), int) or prep[key] < 1:
            problems.append(f"{key} {prep.get(key)!r} is not a positive integer")
    if not isinstance(prep.get("datasets"), Mapping):
        problems.append("no datasets settings (window, sizes, grid)")
    if problems:
        raise UnusableModelError(f"{model_path}: cacflow.json: {'; '.join(problems)}")
    return prep


def model_dataset_settings(prep: Mapping) -> DatasetSettings:
    """The `DatasetSettings` the model was trained with (defaults for keys not stored)."""
    try:
        return DatasetSettings.from_config(prep["datasets"])
    except (ValueError, TypeError) as error:
        raise UnusableModelError(f"cacflow.json: datasets settings: {error}") from None


def load_classifier(model_path: Path, prep: Mapping):
    """The Keras model, checked against its stored input size and two-class output."""
    import keras

    try:
        model = keras.saving.load_model(Path(model_path), compile=False)
    except (ValueError, TypeError, KeyError, AttributeError, OSError, zipfile.BadZipFile) as error:
        # What Keras raises for a broken archive or unknown layers, on one line.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnusableModelError(f"{model_path}: Keras cannot load it ({first})") from None
    expected = (prep["image_size"], prep["image_size"], prep["channels"])
    shape = tuple(model.input_shape[1:]) if hasattr(model, "input_shape") else ()
    if shape != expected:
        raise UnusableModelError(
            f"{model_path}: model input {shape} does not match its stored preprocessing "
            f"{expected} (image_size, image_size, channels)"
        )
    if tuple(model.output_shape[1:]) != (2,):
        raise UnusableModelError(
            f"{model_path}: output {model.output_shape[1:]}, expected two classes"
        )
    return model


def classify(model, files: Sequence[str], prep: Mapping, batch_size: int = 32) -> np.ndarray:
    """P(calcium) of each PNG, fed exactly as in training and evaluation."""
    if not files:
        return np.zeros(0, dtype=np.float32)
    from .inputs import ImageTable, PipelineSettings, build_pipeline

    n = len(files)
    table = ImageTable(
        files=tuple(map(str, files)),
        labels=np.zeros(n, dtype=np.int32),  # unused by predict; the pipeline carries labels
        patients=("",) * n,
        pixel_area_mm2=np.ones(n, dtype=np.float32),
        lesion_masks=("",) * n,
    )
    settings = PipelineSettings(batch_size=batch_size, channels=prep["channels"], cache=False)
    pipeline = build_pipeline(
        table, settings, training=False, seed=0, image_size=prep["image_size"]
    )
    return np.asarray(model.predict(pipeline.dataset, verbose=0)[:, 1], dtype=np.float64)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# One study ------------------------------------------------------------------------------
def patient_name(study_dir: Path, ingest: IngestSettings, pseudonym_key: str = "") -> str:
    """The folder name, or its keyed pseudonym when ingest pseudonymizes."""
    folder = Path(study_dir).resolve().name
    if ingest.pseudonymize:
        return pseudonym(folder, pseudonym_key)  # ValueError without a key
    return folder


def predict_study(
    model_path: Path,
    study_dir: Path,
    out_dir: Path,
    settings: StudySettings | None = None,
    threshold: float = DEFAULT_HYBRID_THRESHOLD,
    patient_id: str | None = None,
    pseudonym_key: str = "",
    keep_images: bool = False,
    batch_size: int = 32,
    config_datasets: Mapping | None = None,
    scoring: ScoringSettings | None = None,
) -> Prediction:
    """Score one study with a trained cacflow model; see the module docstring.

    `settings`: ingest and segmentation as in the workflow's config; its ``datasets`` are
    not used: the model's stored ones are. `config_datasets` (a config's ``datasets:``
    section) is only compared with them, for a note where they differ. `scoring`: the
    classical score's rules (the config's ``agatston: classical:``; default
    `ScoringSettings()`, the config's defaults). `patient_id`
    defaults to `patient_name`. Raises `UnusableModelError` (model) or the
    `cacflow.ingest.IngestError` of a refused study, after removing earlier outputs."""
    started = time.perf_counter()
    settings = settings or StudySettings()
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within 0..1, got {threshold}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, overlay_path = out_dir / PREDICTION_JSON, out_dir / OVERLAY_PNG
    for stale in (json_path, overlay_path):
        stale.unlink(missing_ok=True)
    seconds: dict[str, float] = {}
    clock = _Clock(seconds)

    if not Path(model_path).is_file():
        raise UnusableModelError(f"{model_path}: model file not found")
    if patient_id is None:
        patient_id = patient_name(study_dir, settings.ingest, pseudonym_key)
    # Ingest first: a refused study is told in a second, without importing TensorFlow.
    report = read_checked_study(Path(study_dir), patient_id, settings.ingest)
    if not report.accepted:
        raise report.error
    volume = volume_of(report.ct)
    clock.lap("read")
    prep = model_preprocessing(model_path)
    kind = prep["dataset"]
    dataset_settings = model_dataset_settings(prep)
    notes = _settings_notes(config_datasets or {}, dataset_settings)
    model = load_classifier(model_path, prep)
    clock.lap("model")
    chain = replace(settings, datasets=dataset_settings, scoring=scoring or settings.scoring)

    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".images-") as work:
        work = Path(work)
        # No label table and no truth: a new study is unlabelled.
        result = process_volume(volume, patient_id, chain, work)
        heart_mask, score = result.heart_mask, result.score
        seconds["segmentation"] = result.seconds["segmentation"]
        seconds["images"] = result.seconds["datasets"]
        clock.last = time.perf_counter()
        images = result.datasets.rows[kind]
        probabilities = classify(
            model, [str(work / kind / row["path"]) for row in images], prep, batch_size
        )
        clock.lap("classifier")
        if keep_images:
            _keep_images(work / kind, out_dir / "images" / kind, patient_id, images)

    predictions = [
        {"patient_id": patient_id, "slice": row["slice"], "tile": row["tile"], "probability": p}
        for row, p in zip(images, probabilities, strict=True)
    ]
    method = f"hybrid:{kind}/{prep['model']}"
    hybrid = hybrid_scores(score.lesions, predictions, method, threshold)
    hybrid_row = hybrid[0] if hybrid else patient_row(patient_id, method, 0.0, 0.0, 0)
    # The same rule, one lesion at a time, says which lesions the hybrid score keeps.
    kept = [
        bool(predictions)
        and hybrid_scores([lesion], predictions, method, threshold)[0]["n_lesions"] == 1
        for lesion in score.lesions
    ]
    clock.lap("scoring")
    seconds["scoring"] += result.seconds["agatston"]

    record = _record(
        patient_id=patient_id,
        pseudonymized=settings.ingest.pseudonymize,
        model_path=Path(model_path),
        prep=prep,
        dataset_settings=dataset_settings,
        threshold=threshold,
        volume=volume,
        heart_mask=heart_mask,
        images=images,
        probabilities=probabilities,
        lesions=score.lesions,
        kept=kept,
        classical=score.row,
        hybrid=hybrid_row,
        notes=notes + list(report.ct.warnings),
    )
    draw_overlay(
        overlay_path, record, volume.hu, heart_mask, dataset_settings, volume.pixel_spacing_mm
    )
    clock.lap("overlay")
    seconds["total"] = time.perf_counter() - started
    record["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    _write_json(json_path, record)
    return Prediction(record, json_path, overlay_path, record["notes"])


class _Clock:
    def __init__(self, seconds: dict[str, float]) -> None:
        self.seconds = seconds
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now


def _settings_notes(config: Mapping, model: DatasetSettings) -> list[str]:
    """A note naming the config's datasets settings that differ from the model's (which
    are used)."""
    model_values = asdict(model)
    differ = [
        f"{key} {config[key]} -> {model_values[key]}"
        for key in sorted(config)
        if key in model_values and key != "png_compress_level" and config[key] != model_values[key]
    ]
    if not differ:
        return []
    return ["datasets settings of the model used, not the config's: " + ", ".join(differ)]


def _keep_images(source: Path, target: Path, patient_id: str, rows: list[dict]) -> None:
    """The images the model saw, in the workflow's layout: <dataset>/<patient>/..., the
    per-patient manifest and manifest.tsv."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    write_tsv(target / "manifest.tsv", rows, MANIFEST_COLUMNS)


def _tiles(text: str) -> list[int]:
    return [int(t) for t in str(text or "").split(",") if t.strip()]


def _totals(row: Mapping) -> dict:
    return {
        "agatston": float(row["agatston"]),
        "volume_mm3": float(row["volume_mm3"]),
        "risk_category": str(row["risk_category"]),
        "n_lesions": int(row["n_lesions"]),
    }


def _record(
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


def _write_json(path: Path, record: Mapping) -> None:
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

    from .datasets import window_to_uint8

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
            f"{classical['n_lesions']} lesions)"
        ),
        (
            f"hybrid Agatston {hybrid['agatston']:.1f} ({hybrid['risk_category']}, "
            f"{hybrid['n_lesions']} lesions)"
        ),
        f"seconds: {stages}; total {seconds['total']:.1f}",
    ]
