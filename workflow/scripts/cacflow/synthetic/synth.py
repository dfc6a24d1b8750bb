"""The synthetic CAC-CT cohort: DICOM series, slice labels and the truth behind them.

Layout of a cohort folder (the same whether written by `cacflow synth` or the workflow):

    dicom/<patient_id>/IM0001.dcm ...   one CT series per patient, one file per slice
    labels.tsv                          a row per slice: patient_id, instance_number,
                                        sop_instance_uid, calcium (0/1), cac_class
    truth/<patient_id>.npz              hu, heart_mask, lesion_labels, lesion_artery, ...
    truth/patients.tsv                  a row per patient: Agatston total and per artery,
                                        volume, risk category, number of lesions
    truth/phi.tsv                       only with phi: every identifying value written

Per patient the random streams are derived from (seed, patient index), and per slice
from (seed, patient index, slice), so a patient does not change when the cohort grows,
and any subset of slices renders exactly as in the full series.

The truth score is the standard Agatston algorithm (`cacflow.scoring.agatston`) applied to the
stored HU inside the coronary lesion map: what a perfect reader of this image would
score, noise and partial volume included.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from cacflow import settings_from_config
from cacflow.dicom.dicom_io import SeriesGeometry, SeriesIdentity, write_ct_series
from cacflow.patients import synthetic_patient_ids, synthetic_patient_index
from cacflow.scoring.agatston import cac_class
from cacflow.scoring.reference import reference_scores
from cacflow.synthetic.acquisition import Acquisition, sample_acquisition
from cacflow.synthetic.anatomy import Anatomy, sample_anatomy
from cacflow.synthetic.image_formation import Volume, render_volume
from cacflow.tables import read_tsv, save_npz, write_tsv

LABEL_COLUMNS = ("patient_id", "instance_number", "sop_instance_uid", "calcium", "cac_class")
PATIENT_COLUMNS = (
    "patient_id",
    "agatston_total",
    "agatston_lad",
    "agatston_lcx",
    "agatston_rca",
    "volume_mm3",
    "risk_category",
    "n_lesions",
    "cac_class",
    "n_slices",
    "pixel_spacing_mm",
    "slice_thickness_mm",
    "noise_sd_hu",
    "noncoronary_calcifications",
)


@dataclass(frozen=True)
class SynthSettings:
    """Settings that shape one patient (the cohort size is not one of them)."""

    seed: int = 2021
    size: int = 512
    pixel_spacing_mm: tuple[float, float] = (0.5, 0.8)
    slice_thickness_mm: tuple[float, ...] = (3.0,)
    noise_sd_hu: float = 20.0
    noise_model: str = "gaussian"
    phi: bool = False

    @classmethod
    def from_config(cls, config: Mapping) -> SynthSettings:
        """From the workflow's `synthetic:` section; unknown keys (patients, ...) are ignored."""
        settings = settings_from_config(cls, config)
        floats = {
            key: tuple(float(v) for v in getattr(settings, key))
            for key in ("pixel_spacing_mm", "slice_thickness_mm")
        }
        return replace(settings, **floats)


@dataclass
class SimulatedPatient:
    patient_id: str
    anatomy: Anatomy
    acquisition: Acquisition
    volume: Volume | None


def simulate_patient(
    patient_id: str, settings: SynthSettings, slices: Iterable[int] | None = None
) -> SimulatedPatient:
    """Draw the anatomy and acquisition and render the series (or only `slices`)."""
    index = synthetic_patient_index(patient_id)
    rng = np.random.default_rng([settings.seed, index, 0])
    anatomy = sample_anatomy(rng)
    acq = sample_acquisition(
        anatomy,
        rng,
        settings.size,
        settings.pixel_spacing_mm,
        settings.slice_thickness_mm,
        settings.noise_sd_hu,
        settings.noise_model,
    )
    volume = render_volume(
        anatomy, acq, lambda k: np.random.default_rng([settings.seed, index, 1, k]), slices
    )
    return SimulatedPatient(patient_id, anatomy, acq, volume)


def coronary_slices(patient: SimulatedPatient) -> list[int]:
    """Indices of the slices that a coronary calcification can reach (for fast truth)."""
    acq = patient.acquisition
    z = acq.slice_z_mm()
    hits: set[int] = set()
    for calc in patient.anatomy.calcifications:
        if calc.kind != "coronary":
            continue
        half = calc.shape.half_extent()[2] + acq.slice_thickness_mm
        hits.update(np.flatnonzero(np.abs(z - calc.shape.center[2]) <= half).tolist())
    return sorted(hits)


def truth_summary(patient: SimulatedPatient) -> tuple[dict, np.ndarray]:
    """The patient's truth row and the per-slice calcium labels (0/1)."""
    vol, acq = patient.volume, patient.acquisition
    reference, result = reference_scores(
        vol.hu,
        vol.lesion_labels,
        vol.lesion_artery,
        (acq.pixel_spacing_mm, acq.pixel_spacing_mm),
        acq.slice_thickness_mm,
    )
    kinds = sorted({c.kind for c in patient.anatomy.calcifications if c.kind != "coronary"})
    row = {
        "patient_id": patient.patient_id,
        **{key: reference[key] for key in PATIENT_COLUMNS if key in reference},
        "cac_class": cac_class(result.total),
        "n_slices": acq.n_slices,
        "pixel_spacing_mm": round(acq.pixel_spacing_mm, 4),
        "slice_thickness_mm": acq.slice_thickness_mm,
        "noise_sd_hu": round(acq.noise_sd_hu, 2),
        "noncoronary_calcifications": ",".join(kinds) or "none",
    }
    calcium = (result.score_by_slice(acq.n_slices) > 0).astype(int)
    return row, calcium


def synth_patient(out_dir: Path, patient_id: str, settings: SynthSettings) -> dict:
    """Write one patient's series, truth arrays, label rows and truth row under out_dir."""
    out_dir = Path(out_dir)
    patient = simulate_patient(patient_id, settings)
    vol, acq = patient.volume, patient.acquisition
    identity = _identity(patient_id, settings)
    geometry = SeriesGeometry(
        pixel_spacing_mm=acq.pixel_spacing_mm,
        slice_thickness_mm=acq.slice_thickness_mm,
        origin_x_mm=acq.origin_x_mm,
        origin_y_mm=acq.origin_y_mm,
        slice_z_mm=tuple(float(z) for z in acq.slice_z_mm()),
    )
    sop_uids = write_ct_series(
        out_dir / "dicom" / patient_id, vol.hu, geometry, identity, kvp=acq.kvp
    )
    row, calcium = truth_summary(patient)
    _write_npz(out_dir / "truth" / f"{patient_id}.npz", patient)
    label_rows = [
        {
            "patient_id": patient_id,
            "instance_number": k + 1,
            "sop_instance_uid": uid,
            "calcium": int(calcium[k]),
            "cac_class": row["cac_class"],
        }
        for k, uid in enumerate(sop_uids)
    ]
    write_tsv(out_dir / "labels" / f"{patient_id}.tsv", label_rows, LABEL_COLUMNS)
    write_tsv(out_dir / "truth" / f"{patient_id}.summary.tsv", [row], PATIENT_COLUMNS)
    if identity.extra:
        phi_rows = [
            {"patient_id": patient_id, "tag": k, "value": v}
            for k, v in [
                ("PatientName", identity.patient_name),
                ("PatientID", identity.patient_id),
                *identity.extra.items(),
            ]
        ]
        write_tsv(
            out_dir / "truth" / f"{patient_id}.phi.tsv", phi_rows, ("patient_id", "tag", "value")
        )
    return row


def _write_npz(path: Path, patient: SimulatedPatient) -> None:
    vol, acq = patient.volume, patient.acquisition
    save_npz(
        path,
        hu=vol.hu,
        heart_mask=vol.heart_mask,
        lesion_labels=vol.lesion_labels,
        lesion_artery=vol.lesion_artery,
        lesion_kind=vol.lesion_kind,
        noncoronary_calcium=vol.noncoronary_calcium,
        pixel_spacing_mm=np.array([acq.pixel_spacing_mm, acq.pixel_spacing_mm]),
        slice_thickness_mm=np.float64(acq.slice_thickness_mm),
        instance_numbers=np.arange(1, acq.n_slices + 1),
        slice_z_mm=vol.slice_z_mm,
        acquisition=np.array(repr(asdict(acq))),
    )


_GIVEN = (
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "Wei",
    "Aisha",
    "Lars",
    "Sofia",
    "Kenji",
    "Fatima",
    "Miguel",
    "Olga",
    "Tomasz",
    "Ingrid",
    "Ravi",
    "Chloe",
)
_FAMILY = (
    "Smith",
    "Garcia",
    "Okafor",
    "Nguyen",
    "Kowalski",
    "Johansson",
    "Rossi",
    "Tanaka",
    "Haddad",
    "Schmidt",
    "Murphy",
    "Silva",
    "Novak",
    "Dubois",
    "Patel",
    "Larsen",
)
_INSTITUTIONS = (
    "St. Aldhelm Heart Centre",
    "Riverside General Hospital",
    "Lakeview University Clinic",
    "Northgate Cardiology Institute",
)


def _identity(patient_id: str, settings: SynthSettings) -> SeriesIdentity:
    entropy = ("cacflow-synth", str(settings.seed), patient_id)
    if not settings.phi:
        return SeriesIdentity(patient_id, patient_id, entropy)
    rng = np.random.default_rng([settings.seed, synthetic_patient_index(patient_id), 2])
    name = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}"
    physician = f"{rng.choice(_FAMILY)}^{rng.choice(_GIVEN)}^^Dr"
    birth = f"{rng.integers(1935, 1985)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    study = f"{rng.integers(2015, 2025)}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    extra = {
        "PatientBirthDate": birth,
        "PatientSex": str(rng.choice(["F", "M"])),
        "StudyDate": study,
        "SeriesDate": study,
        "AcquisitionDate": study,
        "ContentDate": study,
        "StudyTime": f"{rng.integers(7, 18):02d}{rng.integers(0, 60):02d}00",
        "InstitutionName": str(rng.choice(_INSTITUTIONS)),
        "ReferringPhysicianName": physician,
        "OtherPatientIDs": f"H{rng.integers(10**6, 10**7)}",
        "AccessionNumber": f"A{rng.integers(10**7, 10**8)}",
    }
    mrn = f"{rng.integers(10**7, 10**8)}"
    return SeriesIdentity(mrn, name, entropy, extra)


# ---------------------------------------------------------------------------------------
# Tables


def merge_tables(
    label_paths: list[Path], summary_paths: list[Path], labels_out: Path, patients_out: Path
) -> None:
    """Concatenate per-patient label and truth tables, in patient order."""
    labels = [row for path in sorted(map(str, label_paths)) for row in read_tsv(path)]
    patients = [row for path in sorted(map(str, summary_paths)) for row in read_tsv(path)]
    write_tsv(labels_out, labels, LABEL_COLUMNS)
    write_tsv(patients_out, patients, PATIENT_COLUMNS)


def synth_cohort(
    out_dir: Path, n_patients: int, settings: SynthSettings, jobs: int = 1, log=sys.stderr
) -> list[dict]:
    """Write a whole cohort (the `cacflow synth` command)."""
    out_dir = Path(out_dir)
    ids = synthetic_patient_ids(n_patients)
    rows = []
    with ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else _Serial() as pool:
        for done, row in enumerate(
            pool.map(synth_patient, [out_dir] * len(ids), ids, [settings] * len(ids)), start=1
        ):
            rows.append(row)
            print(
                f"[{done}/{len(ids)}] {row['patient_id']}: {row['n_slices']} slices, "
                f"Agatston {row['agatston_total']:.1f} ({row['risk_category']})",
                file=log,
            )
    merge_tables(
        [out_dir / "labels" / f"{pid}.tsv" for pid in ids],
        [out_dir / "truth" / f"{pid}.summary.tsv" for pid in ids],
        out_dir / "labels.tsv",
        out_dir / "truth" / "patients.tsv",
    )
    if settings.phi:
        phi = [r for pid in ids for r in read_tsv(out_dir / "truth" / f"{pid}.phi.tsv")]
        write_tsv(out_dir / "truth" / "phi.tsv", phi, ("patient_id", "tag", "value"))
    return rows


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def map(fn, *iterables):
        return map(fn, *iterables)
