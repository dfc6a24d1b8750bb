"""A synthesized patient through the workflow's per-patient calls (ingest, heart mask,
classical score), beside what the phantom put in it: the benchmarks that label the workflow's
lesions by the truth share these."""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from cacflow.dicom.ingest import read_study, volume_of
from cacflow.imaging.volume import Volume
from cacflow.pipeline import StudySettings, segment_volume
from cacflow.scoring.agatston import agatston_score
from cacflow.scoring.reference import LesionMap, read_lesion_map
from cacflow.scoring.scoring import PatientScore, classical_score

KINDS = ("coronary", "noncoronary", "outside_heart", "inside_heart")


def kind_map(truth_path: Path, instance_numbers: np.ndarray, truth: LesionMap) -> np.ndarray:
    """Per pixel, 1 + the index in KINDS of what the phantom put there."""
    with np.load(truth_path) as data:
        index = {int(n): k for k, n in enumerate(data["instance_numbers"])}
        noncoronary = data["noncoronary_calcium"][[index[int(n)] for n in instance_numbers]]
    kinds = np.where(truth.heart_mask.astype(bool), 4, 3).astype(np.int8)
    kinds[noncoronary.astype(bool)] = 2
    kinds[truth.coronary_mask()] = 1
    return kinds


class ScoredStudy(NamedTuple):
    """A synthesized patient through the workflow's per-patient calls, beside its truth."""

    volume: Volume
    heart_mask: np.ndarray
    classical: PatientScore
    truth_map: LesionMap
    kinds: np.ndarray  # `kind_map`


def scored_study(cohort: Path, pid: str) -> ScoredStudy:
    """Ingest, heart mask and classical score (config.yaml's defaults) of the synthesized
    patient `pid` of `cohort` (its DICOM and truth written by `synth_patient`)."""
    study = StudySettings()
    report = read_study(cohort / "dicom" / pid, pid, study.ingest)
    if not report.accepted:
        raise RuntimeError(f"{pid}: refused at ingest: {report.error.reason}")
    volume = volume_of(report.ct)
    heart_mask = segment_volume(volume, study.segmentation)
    classical = classical_score(pid, volume, heart_mask, study.datasets.grid)
    truth_path = cohort / "truth" / f"{pid}.npz"
    truth_map = read_lesion_map(truth_path, volume.instance_numbers)
    kinds = kind_map(truth_path, volume.instance_numbers, truth_map)
    return ScoredStudy(volume, heart_mask, classical, truth_map, kinds)


def lesion_kinds(scored: ScoredStudy) -> dict[tuple[int, float, float], str]:
    """The KINDS name of each lesion of the classical score (what the phantom put under most
    of its pixels), by (slice index, centroid row, centroid column) as its lesion row gives
    them."""
    volume = scored.volume
    lesions = agatston_score(
        volume.hu,
        scored.classical.filtered.region,
        volume.pixel_spacing_mm,
        volume.slice_spacing_mm,
        lesion_labels=scored.kinds,
    ).lesions
    return {
        lesion_key(lesion.slice_index, lesion.centroid_row, lesion.centroid_col): KINDS[
            lesion.label - 1
        ]
        for lesion in lesions
    }


def lesion_key(slice_index: int, row: float, col: float) -> tuple[int, float, float]:
    """A lesion's key in `lesion_kinds`: its centroid rounded as the lesion tables round it."""
    return int(slice_index), round(float(row), 2), round(float(col), 2)
