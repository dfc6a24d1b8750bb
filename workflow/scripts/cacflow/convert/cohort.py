"""What every converter writes: the own-data layout the workflow reads.

DIR/dicom/<patient>/        the study
DIR/labels.tsv              slice labels (a slice is calcium when a reference lesion on
                            it scores)
DIR/lesions/<patient>.npz   the lesion map (cacflow.scoring.reference)
DIR/reference.tsv           reference scores per patient, by the project's Agatston code
DIR/conversion.tsv          per patient: converted or left out, and why
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from cacflow.imaging.volume import Volume
from cacflow.scoring.agatston import cac_class
from cacflow.scoring.reference import REFERENCE_COLUMNS, reference_scores, write_lesion_map
from cacflow.tables import write_tsv

LABEL_COLUMNS = ("patient_id", "instance_number", "calcium", "cac_class")
CONVERSION_COLUMNS = (
    "patient_id",
    "status",  # converted, or left out
    "reason",
    "n_slices",
    "n_rois",
    "agatston_total",
    "dataset_agatston_total",  # the dataset's own score table, where it has one
    "difference",
)


class ConversionError(ValueError):
    """Why one patient cannot be converted (one line; the others go on)."""


@dataclass
class ConvertedPatient:
    """A study and its reference lesions, slices in the volume's order."""

    patient_id: str
    volume: Volume
    lesion_labels: np.ndarray
    lesion_artery: list[str]


def write_patient(out: Path, patient: ConvertedPatient) -> tuple[dict, list[dict]]:
    """Write the patient's lesion map; return its reference row and its label rows."""
    volume = patient.volume
    write_lesion_map(
        Path(out) / "lesions" / f"{patient.patient_id}.npz",
        patient.lesion_labels,
        patient.lesion_artery,
        volume.pixel_spacing_mm,
        volume.instance_numbers,
    )
    row, result = reference_scores(
        volume.hu,
        patient.lesion_labels,
        np.asarray(patient.lesion_artery),
        volume.pixel_spacing_mm,
        volume.slice_spacing_mm,
    )
    per_slice = result.score_by_slice(volume.hu.shape[0])
    labels = [
        {
            "patient_id": patient.patient_id,
            "instance_number": int(number),
            "calcium": int(score > 0),
            "cac_class": cac_class(result.total),
        }
        for number, score in zip(volume.instance_numbers, per_slice, strict=True)
    ]
    return {"patient_id": patient.patient_id, **row}, labels


def write_tables(
    out: Path, references: list[dict], labels: list[dict], conversion: list[dict]
) -> None:
    out = Path(out)
    write_tsv(out / "reference.tsv", references, REFERENCE_COLUMNS)
    write_tsv(out / "labels.tsv", labels, LABEL_COLUMNS)
    write_tsv(out / "conversion.tsv", conversion, CONVERSION_COLUMNS)


def first_pixel_mm(series: Path) -> tuple[float, float]:
    """ImagePositionPatient x, y of a series' first file (the synthetic fixtures')."""
    first = next(iter(sorted(Path(series).glob("*.dcm"))))
    position = pydicom.dcmread(first, stop_before_pixels=True).ImagePositionPatient
    return float(position[0]), float(position[1])
