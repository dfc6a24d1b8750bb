"""Score one new study with a trained model, outside Snakemake (`cacflow predict`).

The same code as the workflow, in the same order:

1. ingest (`cacflow.pipeline.read_checked_study`): the same checks, PHI guard and one-line
   reasons; a refused study raises its `cacflow.dicom.ingest.IngestError` (before TensorFlow is
   imported or the model read: only a missing model file is reported earlier);
2. the rest of the workflow's per-patient chain (`cacflow.pipeline.process_volume`): heart
   segmentation, the image datasets and the classical Agatston score inside the heart mask.
   The images are made with the window, sizes and grid stored inside the model
   (``cacflow.json``, written by `cacflow.learning.model_file.save_model`). The model's preprocessing
   wins over any config: a model cannot be paired with images made otherwise, and a
   ``.keras`` without ``cacflow.json`` is refused (`UnusableModelError`);
3. the classifier on every image of the model's dataset, batched, through the training input
   pipeline (`cacflow.learning.inputs.build_pipeline`: PNG grey levels, resized to the model's
   input as stored in the model (`model_resize`), / 255, a grey image repeated to its
   channels, a slab's RGB fed as it is);
4. the hybrid score (`cacflow.scoring.scoring.hybrid_scores`: the classical lesions shown by an image
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

import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from cacflow.dicom.ingest import IngestSettings, volume_of
from cacflow.imaging.datasets import MANIFEST_COLUMNS, DatasetSettings
from cacflow.learning.model_file import (
    UnusableModelError,
    load_classifier,
    model_dataset_settings,
    model_preprocessing,
)
from cacflow.patients import pseudonym
from cacflow.pipeline import StudySettings, process_volume, read_checked_study
from cacflow.prediction_record import (
    OVERLAY_PNG,
    PREDICTION_JSON,
    build_record,
    draw_overlay,
    write_record,
)
from cacflow.scoring.scoring import (
    DEFAULT_HYBRID_THRESHOLD,
    ScoringSettings,
    hybrid_scores,
    patient_row,
)
from cacflow.tables import write_tsv


@dataclass
class Prediction:
    """What `predict_study` wrote: the content of prediction.json and the files."""

    record: dict
    json_path: Path
    overlay_path: Path
    notes: list[str] = field(default_factory=list)


def classify(model, files: Sequence[str], prep: Mapping, batch_size: int = 32) -> np.ndarray:
    """P(calcium) of each PNG, fed exactly as in training and evaluation."""
    if not files:
        return np.zeros(0, dtype=np.float32)
    from cacflow.learning.inputs import ImageTable, PipelineSettings, build_pipeline

    n = len(files)
    table = ImageTable(
        files=tuple(map(str, files)),
        labels=np.zeros(n, dtype=np.int32),  # unused by predict; the pipeline carries labels
        patients=("",) * n,
        pixel_area_mm2=np.ones(n, dtype=np.float32),
        lesion_masks=("",) * n,
    )
    settings = PipelineSettings(
        batch_size=batch_size, channels=prep["channels"], cache=False, resize=prep["resize"]
    )
    pipeline = build_pipeline(
        table, settings, training=False, seed=0, image_size=prep["image_size"]
    )
    return np.asarray(model.predict(pipeline.dataset, verbose=0)[:, 1], dtype=np.float64)


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
    `cacflow.dicom.ingest.IngestError` of a refused study, after removing earlier outputs."""
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
    hybrid_row = hybrid[0] if hybrid else patient_row(patient_id, method, 0.0, 0.0)
    # The same rule, one lesion at a time, says which lesions the hybrid score keeps.
    kept = [
        bool(predictions)
        and hybrid_scores([lesion], predictions, method, threshold)[0]["n_lesions"] == 1
        for lesion in score.lesions
    ]
    clock.lap("scoring")
    seconds["scoring"] += result.seconds["agatston"]

    record = build_record(
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
    write_record(json_path, record)
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
