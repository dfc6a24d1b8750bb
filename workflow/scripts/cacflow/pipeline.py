"""The per-patient chain: ingest with its checks and PHI guard, heart segmentation (with its
QC against a known truth), the three image datasets and the classical Agatston score, with
the gallery of its candidate lesions.

The workflow's per-patient rule and `cacflow ingest` run it whole (`run_patient`), writing
the same tables (the gallery only where the rule asks for it); `cacflow predict` runs the
same two calls (`read_checked_study`, then `process_volume`), with the model's loading
between them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cacflow import settings_from_config
from cacflow.dicom.ingest import (
    QC_COLUMNS,
    IngestSettings,
    StudyReport,
    check_labels,
    qc_rows,
    read_study,
    volume_of,
)
from cacflow.imaging.datasets import (
    DATASETS,
    MANIFEST_COLUMNS,
    DatasetSettings,
    PatientDatasets,
    build_patient_datasets,
    merge_manifests,
)
from cacflow.imaging.labels import slice_labels_from_table
from cacflow.imaging.segmentation import SegmentationSettings, segment_heart, segmentation_scores
from cacflow.imaging.volume import Volume
from cacflow.reporting.lesion_gallery import draw_lesion_gallery
from cacflow.scoring.lesions import LESION_EVAL_COLUMNS, lesion_detection, lesion_eval_row
from cacflow.scoring.reference import LesionMap, read_lesion_map
from cacflow.scoring.scoring import (
    CLASSICAL,
    LESION_COLUMNS,
    PATIENT_COLUMNS,
    PatientScore,
    ScoringSettings,
    classical_score,
)
from cacflow.tables import save_npz, write_tsv

SEGMENTATION_QC_COLUMNS = (
    "patient_id",
    "n_slices",
    "n_mask_slices",
    "mask_volume_ml",
    "n_heart_slices",
    "n_nonheart_slices",
    "dice_heart_slices",
    "dice_volume",
    "nonempty_rate_nonheart",
    "n_lesions",
    "n_lesions_inside",
    "lesion_inside_fraction",
    "warning",  # e.g. no heart found: the study may not be a cardiac CT
)
NO_HEART = "no heart found on any slice: is this a cardiac CT? (its classical score is 0)"
DATASET_QC_COLUMNS = (
    "patient_id",
    "n_slices",
    "n_empty_mask_dropped",
    "n_calcium_slices",
    "n_calcium_slices_dropped",
    "n_calcium_slices_without_positive_tile",
    "n_calcium_tiles",
    "n_original",
    "n_segmented",
    "n_cropped",
    "label_source",
)


# Segmentation ---------------------------------------------------------------------------
def save_segmentation(
    path: Path, heart_mask: np.ndarray | None, instance_numbers: np.ndarray | None
) -> None:
    """`heart_mask` (bool, slice x row x col) and the slice order used, written atomically
    (empty arrays for a refused study)."""
    if heart_mask is None:
        heart_mask, instance_numbers = np.zeros((0, 0, 0), dtype=bool), np.zeros(0)
    save_npz(
        path,
        heart_mask=np.asarray(heart_mask, dtype=bool),
        instance_numbers=np.asarray(instance_numbers, dtype=np.int32),
    )


def segment_volume(volume: Volume, settings: SegmentationSettings) -> np.ndarray:
    return segment_heart(
        volume.hu, volume.pixel_spacing_mm, volume.slice_spacing_mm, settings=settings
    )


def segmentation_qc_row(
    patient_id: str, volume: Volume, heart_mask: np.ndarray, truth: LesionMap | None
) -> dict:
    """A row of results/qc/segmentation.tsv; the truth columns only when a truth is known
    (the Dice only when it has a heart mask)."""
    row = dict.fromkeys(SEGMENTATION_QC_COLUMNS, "")
    voxel_ml = float(np.prod(volume.pixel_spacing_mm)) * volume.slice_spacing_mm / 1000.0
    row.update(
        patient_id=patient_id,
        n_slices=heart_mask.shape[0],
        n_mask_slices=int(heart_mask.any(axis=(1, 2)).sum()),
        mask_volume_ml=f"{heart_mask.sum() * voxel_ml:.1f}",
        warning="" if heart_mask.any() else NO_HEART,
    )
    if truth is not None:
        scores = segmentation_scores(
            heart_mask,
            truth.heart_mask,
            volume.hu,
            truth.lesion_labels,
            truth.lesion_kind,
            volume.pixel_spacing_mm,
        )
        for key in SEGMENTATION_QC_COLUMNS:
            if key in scores:
                value = scores[key]
                row[key] = f"{value:.4f}" if isinstance(value, float) else value
    return row


# Datasets -------------------------------------------------------------------------------
def make_datasets(
    out_root: Path,
    patient_id: str,
    volume: Volume,
    heart_mask: np.ndarray,
    label_rows: list[dict] | None,
    lesion_mask: np.ndarray | None,
    settings: DatasetSettings,
    label_key: str | None = None,
) -> PatientDatasets:
    """The three datasets of one patient. `label_key` is the patient's ID in the label table
    when it differs from `patient_id` (pseudonymized own data); without a label table
    (`label_rows` None) the labels stay empty. `lesion_mask`: the true coronary lesion
    pixels, when known."""
    labels = None
    if label_rows is not None:
        labels = slice_labels_from_table(label_rows, label_key or patient_id)
    return build_patient_datasets(
        out_root, patient_id, volume, heart_mask, labels, lesion_mask, settings
    )


def write_empty_datasets(out_root: Path, patient_id: str) -> None:
    """A refused study's place in the datasets: empty image folders, header-only manifests."""
    for name in DATASETS:
        (Path(out_root) / name / patient_id).mkdir(parents=True, exist_ok=True)
        write_tsv(Path(out_root) / name / f"{patient_id}.tsv", [], MANIFEST_COLUMNS)


def dataset_qc_row(result: PatientDatasets, with_truth: bool) -> dict:
    row = dict.fromkeys(DATASET_QC_COLUMNS, "")
    row.update({k: v for k, v in result.counts().items() if k in row})
    row["label_source"] = "lesion_map" if with_truth else "hu_candidates"
    return row


# One study, all stages -----------------------------------------------------------------
SETTINGS = {"segmentation": SegmentationSettings, "datasets": DatasetSettings}


def settings_from(section: str, values: dict):
    """The settings dataclass of a config section, from its values (unknown keys fail)."""
    try:
        return settings_from_config(SETTINGS[section], values, strict=True)
    except ValueError as error:
        raise ValueError(f"{section}: {error}") from None


@dataclass(frozen=True)
class StudySettings:
    ingest: IngestSettings = field(default_factory=IngestSettings)
    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    datasets: DatasetSettings = field(default_factory=DatasetSettings)
    # The classical score's rules (config agatston: classical:).
    scoring: ScoringSettings = field(default_factory=ScoringSettings)


@dataclass
class PatientResult:
    """What the chain made of one accepted study, and the seconds of each stage."""

    volume: Volume
    heart_mask: np.ndarray
    segmentation_qc: dict
    datasets: PatientDatasets
    datasets_qc: dict
    score: PatientScore
    seconds: dict[str, float]
    lesion_eval: dict | None = None  # lesion-level detection, when a truth is known


@dataclass(frozen=True)
class PatientFiles:
    """Where the chain writes one patient's tables: the per-patient rule's outputs. Images
    and manifests go under `datasets`/<dataset>/; the lesion gallery is drawn when `gallery`
    is set, the lesion-level evaluation written when `lesion_eval` is (header only without a
    truth)."""

    series_qc: Path
    segmentation: Path
    segmentation_qc: Path
    datasets: Path
    datasets_qc: Path
    lesions: Path
    scores: Path
    gallery: Path | None = None
    lesion_eval: Path | None = None

    @classmethod
    def in_folder(cls, out_dir: Path, patient_id: str) -> PatientFiles:
        """The layout of `cacflow ingest --out DIR`. No gallery: it is drawn for the
        workflow's report, and checking a study needs the tables only."""
        out_dir = Path(out_dir)
        return cls(
            series_qc=out_dir / "qc" / "series.tsv",
            segmentation=out_dir / "segmentation" / f"{patient_id}.npz",
            segmentation_qc=out_dir / "qc" / "segmentation.tsv",
            datasets=out_dir / "datasets",
            datasets_qc=out_dir / "qc" / "datasets.tsv",
            lesions=out_dir / "agatston" / "lesions.tsv",
            scores=out_dir / "agatston" / "classical.tsv",
        )


def read_checked_study(
    study_dir: Path,
    patient_id: str,
    settings: IngestSettings,
    label_rows: list[dict] | None = None,
    label_key: str | None = None,
) -> StudyReport:
    """Ingest (series found, checked, PHI guard, HU), then the label table's rows of the
    patient checked against the slices when there is one."""
    report = read_study(Path(study_dir), patient_id, settings)
    if label_rows is not None:
        report = check_labels(report, label_rows, label_key or patient_id)
    return report


def process_volume(
    volume: Volume,
    patient_id: str,
    settings: StudySettings,
    datasets_root: Path,
    label_rows: list[dict] | None = None,
    truth_path: Path | None = None,
    label_key: str | None = None,
) -> PatientResult:
    """Heart mask, the three datasets (images under `datasets_root`) and the classical
    score of an accepted study's volume."""
    seconds = {}
    start = time.perf_counter()
    truth = None
    if truth_path is not None:
        truth = read_lesion_map(truth_path, volume.instance_numbers, volume.hu.shape)
    heart_mask = segment_volume(volume, settings.segmentation)
    segmentation_qc = segmentation_qc_row(patient_id, volume, heart_mask, truth)
    seconds["segmentation"] = time.perf_counter() - start
    start = time.perf_counter()
    coronary = None if truth is None else truth.coronary_mask()
    datasets = make_datasets(
        datasets_root, patient_id, volume, heart_mask, label_rows, coronary,
        settings.datasets, label_key=label_key,
    )  # fmt: skip
    seconds["datasets"] = time.perf_counter() - start
    start = time.perf_counter()
    score = classical_score(
        patient_id, volume, heart_mask, settings.datasets.grid, settings=settings.scoring
    )
    seconds["agatston"] = time.perf_counter() - start
    lesion_eval = None
    if coronary is not None:
        detection = lesion_detection(
            volume.hu,
            score.region,
            coronary,
            volume.pixel_spacing_mm,
            volume.slice_spacing_mm,
        )
        lesion_eval = lesion_eval_row(patient_id, CLASSICAL, detection)
    return PatientResult(
        volume=volume,
        heart_mask=heart_mask,
        segmentation_qc=segmentation_qc,
        datasets=datasets,
        datasets_qc=dataset_qc_row(datasets, truth_path is not None),
        score=score,
        seconds=seconds,
        lesion_eval=lesion_eval,
    )


def write_refused(files: PatientFiles, patient_id: str) -> None:
    """A refused study's place in the workflow: an empty mask, empty image folders and
    header-only tables, so that the cohort's merged tables and datasets go on without it,
    and a gallery that says so, so that the report's figure exists."""
    save_segmentation(files.segmentation, None, None)
    write_tsv(files.segmentation_qc, [], SEGMENTATION_QC_COLUMNS)
    write_empty_datasets(files.datasets, patient_id)
    write_tsv(files.datasets_qc, [], DATASET_QC_COLUMNS)
    write_tsv(files.lesions, [], LESION_COLUMNS)
    write_tsv(files.scores, [], PATIENT_COLUMNS)
    if files.lesion_eval is not None:
        write_tsv(files.lesion_eval, [], LESION_EVAL_COLUMNS)
    if files.gallery is not None:
        empty = np.zeros((1, 1, 1))
        draw_lesion_gallery(
            empty, empty.astype(bool), [], (1.0, 1.0), [0], files.gallery,
            f"{patient_id}: study refused",
        )  # fmt: skip


def run_patient(
    study_dir: Path,
    patient_id: str,
    settings: StudySettings,
    files: PatientFiles,
    label_rows: list[dict] | None = None,
    truth_path: Path | None = None,
    label_key: str | None = None,
) -> tuple[StudyReport, PatientResult | None]:
    """The whole chain for one study, its tables written to `files` (each atomically):
    the series QC always, the rest for an accepted study (None for a refused one), and its
    lesion gallery when `files.gallery` is set."""
    start = time.perf_counter()
    report = read_checked_study(study_dir, patient_id, settings.ingest, label_rows, label_key)
    write_tsv(files.series_qc, qc_rows(report), QC_COLUMNS)
    if not report.accepted:
        return report, None
    volume = volume_of(report.ct)
    read_s = time.perf_counter() - start
    result = process_volume(
        volume, patient_id, settings, files.datasets, label_rows, truth_path, label_key
    )
    result.seconds = {"read": read_s, **result.seconds}
    save_segmentation(files.segmentation, result.heart_mask, volume.instance_numbers)
    write_tsv(files.segmentation_qc, [result.segmentation_qc], SEGMENTATION_QC_COLUMNS)
    write_tsv(files.datasets_qc, [result.datasets_qc], DATASET_QC_COLUMNS)
    write_tsv(files.lesions, result.score.lesions, LESION_COLUMNS)
    write_tsv(files.scores, [result.score.row], PATIENT_COLUMNS)
    if files.lesion_eval is not None:
        rows = [result.lesion_eval] if result.lesion_eval else []
        write_tsv(files.lesion_eval, rows, LESION_EVAL_COLUMNS)
    if files.gallery is not None:
        start = time.perf_counter()
        draw_lesion_gallery(
            volume.hu, result.heart_mask, result.score.candidates, volume.pixel_spacing_mm,
            volume.instance_numbers, files.gallery, patient_id,
        )  # fmt: skip
        result.seconds["gallery"] = time.perf_counter() - start
    return report, result


def process_study(
    study_dir: Path,
    out_dir: Path,
    patient_id: str,
    settings: StudySettings,
    label_rows: list[dict] | None = None,
    truth_path: Path | None = None,
    log=sys.stderr,
    label_key: str | None = None,
) -> int:
    """`cacflow ingest`: the chain for one study under `out_dir` (`PatientFiles.in_folder`),
    with a manifest per dataset. Returns 0 when accepted, 2 when refused (the reason is
    printed on one line)."""
    start = time.perf_counter()
    files = PatientFiles.in_folder(out_dir, patient_id)
    report, result = run_patient(
        study_dir, patient_id, settings, files, label_rows, truth_path, label_key
    )
    if result is None:
        print(f"refused: {report.error.reason}", file=log)
        return 2
    for name in DATASETS:
        merge_manifests([result.datasets.manifests[name]], files.datasets / name / "manifest.tsv")
    total = time.perf_counter() - start
    n = result.volume.hu.shape[0]
    rows = result.datasets.rows
    if result.segmentation_qc["warning"]:
        print(f"{patient_id}: warning: {result.segmentation_qc['warning']}", file=log)
    print(
        f"{patient_id}: accepted, {n} slices; heart on "
        f"{result.segmentation_qc['n_mask_slices']} slices; datasets {len(rows['original'])} "
        f"original, {len(rows['segmented'])} segmented, {len(rows['cropped'])} cropped "
        f"images; Agatston {float(result.score.row['agatston']):.1f} (classical); read "
        f"{result.seconds['read']:.2f} s, segmentation {result.seconds['segmentation']:.2f} s, "
        f"total {total:.2f} s ({n / total:.1f} slices/s)",
        file=log,
    )
    return 0
