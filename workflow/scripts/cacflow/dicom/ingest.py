"""Reading one patient's CT series from a folder of DICOM files, with checks and a PHI guard.

What real archives hold, and what this module does about it:

- several series per study (localizer, axial CT, dose report): files are grouped by
  SeriesInstanceUID and the axial CT image series is picked (Modality CT, pixel data,
  not a localizer, slice normal within 30 degrees of the patient's z axis); two such
  series are ambiguous and refused unless `series_choice` is `largest`;
- slices in any file order: they are sorted by position along the orientation normal
  (ImagePositionPatient . (row x column direction)), superior to inferior, never by name;
- broken series: mixed matrix sizes, pixel spacings or orientations, missing rescale or
  spacing tags, duplicate positions, and gaps larger than the slice spacing beyond a
  tolerance are refused with a one-line reason naming the file;
- Enhanced CT (one multi-frame file): each frame is read as a slice, with its position,
  spacing, orientation and rescale from the functional groups, and checked as one; frames
  are numbered 1.. as InstanceNumber (the label table's instance_number);
- compressed transfer syntaxes (JPEG 2000, JPEG lossless, JPEG-LS, RLE) are decoded by
  pydicom's plugins; a missing decoder is named with the package to install;
- identifiers: the files must be anonymized (PS3.15 E.1 basic profile, the tags that
  name or date a person); a file with identifying values refuses the patient unless the
  settings ask to pseudonymize. Nothing read from an identity tag is ever returned, so
  no value can reach results, logs or reports through this module.

Every refusal is an `IngestError` subclass whose message is
`<patient>: <file relative to the study folder>: <problem>`; the workflow records it in
the QC table and leaves the patient out, instead of stopping the run.
"""

from __future__ import annotations

import copy
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from cacflow import settings_from_config
from cacflow.imaging import DatasetError
from cacflow.imaging.labels import slice_labels_from_table
from cacflow.imaging.volume import Volume

# Sorting and geometry ------------------------------------------------------------------
MAX_TILT_DEGREES = 30.0

# Packages that decode each compressed transfer syntax (pydicom's plugins).
DECODER_PACKAGES = {
    "1.2.840.10008.1.2.4.50": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.51": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.57": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.70": "pylibjpeg pylibjpeg-libjpeg",
    "1.2.840.10008.1.2.4.80": "pyjpegls",
    "1.2.840.10008.1.2.4.81": "pyjpegls",
    "1.2.840.10008.1.2.4.90": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.91": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.201": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.202": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.4.203": "pylibjpeg pylibjpeg-openjpeg",
    "1.2.840.10008.1.2.5": "pylibjpeg pylibjpeg-rle",
}

# Identity tags (PS3.15 Annex E basic profile, the ones that name, date or locate a
# person or a visit). Names and IDs may hold the pseudonym; the rest must be empty.
NAME_TAGS = ("PatientName", "PatientID")
IDENTITY_TAGS = (
    "OtherPatientIDs",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "AcquisitionDateTime",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansOfRecord",
    "RequestingPhysician",
    "AccessionNumber",
)
# Values anonymizers put in name tags instead of removing them.
ANONYMOUS_VALUES = re.compile(
    r"^(|anon\w*|anonymous|anonymi[sz]ed|removed|deleted|unknown|none|n/?a|x+|0+)$",
    re.IGNORECASE,
)


# Errors ---------------------------------------------------------------------------------
class IngestError(Exception):
    """A study that cannot be used. `reason` is one line naming the file and the problem."""

    kind = "ingest"

    def __init__(self, patient_id: str, file: str, problem: str):
        self.patient_id = patient_id
        self.file = file
        self.problem = problem
        where = f"{file}: " if file else ""
        super().__init__(f"{patient_id}: {where}{problem}")

    @property
    def reason(self) -> str:
        return str(self)


class EmptyStudyError(IngestError):
    kind = "empty"


class NotDicomError(IngestError):
    kind = "not_dicom"


class TruncatedDicomError(IngestError):
    kind = "truncated"


class NotCTError(IngestError):
    kind = "not_ct"


class MissingTagError(IngestError):
    kind = "missing_tag"


class InconsistentSeriesError(IngestError):
    kind = "inconsistent_series"


class AmbiguousSeriesError(IngestError):
    kind = "ambiguous_series"


class DuplicateSliceError(IngestError):
    kind = "duplicate_slice"


class MissingSliceError(IngestError):
    kind = "missing_slice"


class DecoderMissingError(IngestError):
    kind = "decoder_missing"


class IdentifiableDataError(IngestError):
    kind = "identifiable"


class MissingLabelsError(IngestError):
    kind = "labels"


# Settings and results -------------------------------------------------------------------
@dataclass(frozen=True)
class IngestSettings:
    """The workflow's `ingest:` section."""

    pseudonymize: bool = False
    # A PatientID that matches this regular expression counts as a pseudonym ("" = none).
    pseudonym_pattern: str = ""
    # Identity tags the user declares safe (e.g. dates shifted by their anonymizer).
    allowed_identity_tags: tuple[str, ...] = ()
    # Two positions closer than this are duplicates; a step longer than the slice spacing
    # by more than this is a missing slice.
    position_tolerance_mm: float = 0.1
    # refuse: two axial CT series in one folder refuse the patient; largest: take the one
    # with most slices.
    series_choice: str = "refuse"

    @classmethod
    def from_config(cls, section: dict) -> IngestSettings:
        return settings_from_config(cls, section)


@dataclass
class SeriesSummary:
    """One row of the QC table: what a series is, and whether it was used."""

    series: str  # SeriesNumber, or an index when absent; never the UID
    modality: str
    n_files: int
    status: str = "ignored"  # accepted, refused, ignored
    reason: str = ""
    kind: str = ""


@dataclass
class CTSeries:
    """An accepted axial CT series in HU, slices superior to inferior."""

    patient_id: str
    hu: np.ndarray  # int16 (float32 when the rescale is not integral), slice x row x col
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing)
    slice_spacing_mm: float  # distance between slice centres along the normal
    slice_thickness_mm: float
    positions_mm: np.ndarray  # along the normal, one per slice
    instance_numbers: np.ndarray  # int, one per slice (0 when absent)
    sop_instance_uids: list[str]
    orientation: tuple[float, ...]  # ImageOrientationPatient
    origin_mm: tuple[float, float, float]  # ImagePositionPatient of the first slice
    transfer_syntaxes: tuple[str, ...]
    kvp: float | None
    n_files: int
    warnings: list[str] = field(default_factory=list)


@dataclass
class StudyReport:
    """What ingest found in a study folder: the accepted series or the refusal."""

    patient_id: str
    series: list[SeriesSummary]
    ct: CTSeries | None = None
    error: IngestError | None = None

    @property
    def accepted(self) -> bool:
        return self.ct is not None


def refuse(report: StudyReport, error: IngestError) -> StudyReport:
    """The report of an accepted study turned into a refusal (e.g. no labels for it)."""
    for row in report.series:
        if row.status == "accepted":
            row.status, row.reason, row.kind = "refused", error.reason, error.kind
    return StudyReport(report.patient_id, report.series, None, error)


def check_labels(report: StudyReport, label_rows: list[dict], label_key: str) -> StudyReport:
    """Refuse an accepted study whose label-table rows are unusable (an instance number that
    is no integer, a calcium value other than 0/1, a slice twice) or do not cover all its
    slices: a bad row stops this patient, never the run."""
    if not report.accepted:
        return report
    try:
        labelled = set(slice_labels_from_table(label_rows, label_key))
    except DatasetError as error:
        # The message starts with the table's ID, which may be the folder name: left out.
        problem = "label table: " + str(error).removeprefix(f"{label_key}: ")
        return refuse(report, MissingLabelsError(report.patient_id, "", problem))
    missing = [int(n) for n in report.ct.instance_numbers if int(n) not in labelled]
    if not missing:
        return report
    shown = ", ".join(map(str, missing[:8])) + (" ..." if len(missing) > 8 else "")
    problem = (
        f"no label-table row for {len(missing)} of {len(report.ct.instance_numbers)} slices "
        f"(instance numbers {shown})"
    )
    return refuse(report, MissingLabelsError(report.patient_id, "", problem))


def identifying_tags(ds: pydicom.Dataset, pseudonyms: set[str], settings: IngestSettings):
    """Keywords of the identity tags in `ds` that hold identifying values (values unread
    beyond this test, and never returned)."""
    pattern = re.compile(settings.pseudonym_pattern) if settings.pseudonym_pattern else None
    found = []
    for keyword in NAME_TAGS:
        if keyword in settings.allowed_identity_tags:
            continue
        value = str(ds.get(keyword, "") or "").strip()
        if not value or value in pseudonyms or ANONYMOUS_VALUES.match(value):
            continue
        if pattern is not None and pattern.fullmatch(value):
            continue
        found.append(keyword)
    for keyword in IDENTITY_TAGS:
        if keyword in settings.allowed_identity_tags:
            continue
        value = ds.get(keyword)
        if value is None:
            continue
        text = str(value).strip() if not isinstance(value, pydicom.Sequence) else value
        if text and not (isinstance(text, str) and ANONYMOUS_VALUES.match(text)):
            found.append(keyword)
    return found


# Reading --------------------------------------------------------------------------------
def list_study_files(study_dir: Path) -> list[Path]:
    """Every file under the study folder except hidden files, DICOMDIR and partial writes."""
    files = []
    for root, dirs, names in os.walk(study_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR" or name.endswith(".part"):
                continue
            files.append(Path(root, name))
    return files


def _read_header(path: Path, rel: str, patient_id: str) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise NotDicomError(patient_id, rel, "not a DICOM file (no DICM prefix)") from None
    except (EOFError, OSError, ValueError, KeyError, TypeError, OverflowError) as exc:
        raise TruncatedDicomError(
            patient_id, rel, f"truncated or corrupt DICOM ({type(exc).__name__})"
        ) from None


class _Frame(pydicom.Dataset):
    """One frame of a multi-frame image, as the single-frame image the checks expect."""

    def __init__(self, pixels: np.ndarray) -> None:
        super().__init__()
        object.__setattr__(self, "_frame_pixels", pixels)

    @property
    def pixel_array(self) -> np.ndarray:
        return self._frame_pixels


# Where Enhanced CT keeps what a single-frame image has at its top level: (functional
# group sequence, attribute), looked up in the frame's own groups, then the shared ones.
_FRAME_ATTRIBUTES = {
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "ImagePositionPatient": "PlanePositionSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
}


def frames_of(ds: pydicom.Dataset, rel: str, patient_id: str) -> list[tuple[str, _Frame]]:
    """The frames of a multi-frame image (Enhanced CT Image Storage) as single-frame images
    named `<file> frame <n>`, numbered by frame for the label table, each with its place,
    spacing and rescale from the functional groups."""
    n = int(ds.NumberOfFrames)
    _check_decoder(patient_id, rel, _syntax(ds))
    pixels = _pixel_array(ds, rel, patient_id)
    if pixels.shape[0] != n:
        raise InconsistentSeriesError(
            patient_id, rel, f"{pixels.shape[0]} frames of pixel data, NumberOfFrames {n}"
        )
    shared = ds.get("SharedFunctionalGroupsSequence") or [pydicom.Dataset()]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != n:
        raise MissingTagError(
            patient_id, rel, f"{len(per_frame)} per-frame functional groups for {n} frames"
        )
    skip = {"PixelData", "NumberOfFrames", "SharedFunctionalGroupsSequence",
            "PerFrameFunctionalGroupsSequence"}  # fmt: skip
    frames = []
    for k in range(n):
        frame = _Frame(pixels[k])
        frame.file_meta = ds.file_meta
        for element in ds:
            if element.keyword not in skip:
                frame.add(copy.copy(element))
        for keyword, sequence in _FRAME_ATTRIBUTES.items():
            for groups in (per_frame[k], shared[0]):
                items = groups.get(sequence)
                if items and keyword in items[0]:
                    setattr(frame, keyword, items[0][keyword].value)
                    break
        frame.InstanceNumber = k + 1
        frame.SOPInstanceUID = f"{ds.get('SOPInstanceUID', '')}.{k + 1}"
        frames.append((f"{rel} frame {k + 1}", frame))
    return frames


def _is_image(ds: pydicom.Dataset) -> bool:
    return (
        isinstance(ds, _Frame)
        or "PixelData" in ds
        or "FloatPixelData" in ds
        or "DoubleFloatPixelData" in ds
    )


def _normal(orientation) -> np.ndarray:
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:6], dtype=float)
    return np.cross(row, col)


def _is_axial(ds: pydicom.Dataset) -> bool:
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    if "LOCALIZER" in image_type:
        return False
    orientation = ds.get("ImageOrientationPatient")
    if orientation is None or len(orientation) != 6:
        return True  # checked later, with a reason naming the file
    normal = _normal(orientation)
    norm = np.linalg.norm(normal)
    if norm == 0:
        return True
    return abs(normal[2]) / norm >= np.cos(np.radians(MAX_TILT_DEGREES))


def read_study(
    study_dir: Path,
    patient_id: str,
    settings: IngestSettings | None = None,
    pseudonyms: set[str] | None = None,
) -> StudyReport:
    """Find, check and convert the patient's axial CT series. Never raises IngestError:
    a refusal comes back as `report.error` with the QC rows filled in."""
    settings = settings or IngestSettings()
    pseudonyms = set(pseudonyms or ()) | {patient_id}
    study_dir = Path(study_dir)
    series: list[SeriesSummary] = []
    try:
        ct = _read_study(study_dir, patient_id, settings, pseudonyms, series)
    except IngestError as error:
        # The series being checked when the error came, or a row for the whole folder.
        refused = next((s for s in series if s.status == "accepted"), None)
        if refused is None:
            refused = SeriesSummary("", "", 0)
            series.append(refused)
        refused.status, refused.reason, refused.kind = "refused", error.reason, error.kind
        return StudyReport(patient_id, series, None, error)
    return StudyReport(patient_id, series, ct, None)


def _read_study(study_dir, patient_id, settings, pseudonyms, series_rows) -> CTSeries:
    if not study_dir.is_dir():
        raise EmptyStudyError(patient_id, "", f"study folder not found: {study_dir.name}")
    files = list_study_files(study_dir)
    if not files:
        raise EmptyStudyError(patient_id, "", "empty folder: no files")
    by_series: dict[str, list[tuple[str, pydicom.Dataset]]] = defaultdict(list)
    n_files: dict[str, int] = defaultdict(int)  # a multi-frame file holds many members
    for path in files:
        rel = path.relative_to(study_dir).as_posix()
        ds = _read_header(path, rel, patient_id)
        members = by_series[str(ds.get("SeriesInstanceUID", ""))]
        n_files[str(ds.get("SeriesInstanceUID", ""))] += 1
        if int(ds.get("NumberOfFrames", 1) or 1) > 1 and _is_image(ds):
            members += frames_of(ds, rel, patient_id)
        else:
            members.append((rel, ds))

    candidates = []
    for index, (uid, members) in enumerate(sorted(by_series.items()), start=1):
        first = members[0][1]
        number = first.get("SeriesNumber")
        row = SeriesSummary(
            series=str(number) if number not in (None, "") else f"#{index}",
            modality=str(first.get("Modality", "")),
            n_files=n_files[uid],
        )
        series_rows.append(row)
        if not any(_is_image(ds) for _, ds in members):
            row.reason = "no image data (e.g. a structured report)"
        elif row.modality != "CT":
            row.reason = f"modality {row.modality or 'missing'}, not CT"
        elif not any(_is_axial(ds) for _, ds in members):
            row.reason = "localizer or non-axial images"
        else:
            candidates.append((row, [(rel, ds) for rel, ds in members if _is_image(ds)]))

    if not candidates:
        images = [(rel, ds) for members in by_series.values() for rel, ds in members]
        rel, ds = images[0]
        modality = str(ds.get("Modality", "")) or "missing"
        if modality != "CT":
            raise NotCTError(patient_id, rel, f"modality {modality}, not CT: no CT series")
        raise NotCTError(patient_id, rel, "no axial CT image series (localizer or report only)")
    if len(candidates) > 1:
        if settings.series_choice == "largest":
            candidates.sort(key=lambda c: -len(c[1]))
            for row, _ in candidates[1:]:
                row.reason = "another axial CT series with more slices was chosen"
        else:
            listing = ", ".join(f"series {r.series}: {len(m)} files" for r, m in candidates)
            raise AmbiguousSeriesError(
                patient_id,
                candidates[1][1][0][0],
                f"{len(candidates)} axial CT series in one folder ({listing}); keep one "
                "per patient folder, or set ingest.series_choice: largest",
            )
    row, members = candidates[0]
    row.status = "accepted"
    ct = _check_and_convert(patient_id, members, settings, pseudonyms)
    row.reason = "; ".join(ct.warnings)
    return ct


def _float_list(ds, keyword, rel, patient_id, size) -> list[float]:
    value = ds.get(keyword)
    if value is None or value == "" or len(value) != size:
        raise MissingTagError(patient_id, rel, f"no {keyword}: cannot place the slice")
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        raise MissingTagError(patient_id, rel, f"unreadable {keyword}") from None


def _check_and_convert(patient_id, members, settings, pseudonyms) -> CTSeries:
    warnings: list[str] = []
    for rel, ds in members:
        found = identifying_tags(ds, pseudonyms, settings)
        if found and not settings.pseudonymize:
            raise IdentifiableDataError(
                patient_id,
                rel,
                f"not anonymized: identifying values in {', '.join(found)}; anonymize the "
                "study, or set ingest.pseudonymize: true to ignore them",
            )
        if found:
            warnings.append(f"identity tags ignored (pseudonymize): {', '.join(found)}")
            break

    # Drop exact copies of one instance (the same file twice); keep the first.
    seen: dict[str, str] = {}
    unique = []
    for rel, ds in members:
        uid = str(ds.get("SOPInstanceUID", ""))
        if uid and uid in seen:
            warnings.append(f"{rel} is a copy of {seen[uid]} (same SOPInstanceUID), skipped")
            continue
        seen[uid] = rel
        unique.append((rel, ds))

    first_rel, first = unique[0]
    reference = {}
    for rel, ds in unique:
        if "Rows" not in ds or "Columns" not in ds:
            raise MissingTagError(patient_id, rel, "no Rows/Columns")
        spacing = ds.get("PixelSpacing")
        if spacing is None or len(spacing) != 2 or min(float(v) for v in spacing) <= 0:
            raise MissingTagError(
                patient_id, rel, "no PixelSpacing: the physical size of a pixel is unknown"
            )
        if ds.get("RescaleSlope") in (None, "") or ds.get("RescaleIntercept") in (None, ""):
            raise MissingTagError(
                patient_id, rel, "no RescaleSlope/RescaleIntercept: cannot convert to HU"
            )
        values = {
            "matrix": (int(ds.Rows), int(ds.Columns)),
            "pixel spacing": tuple(round(float(v), 4) for v in spacing),
            "orientation": tuple(_float_list(ds, "ImageOrientationPatient", rel, patient_id, 6)),
        }
        if not reference:
            reference = values
            continue
        for name, value in values.items():
            same = (
                np.allclose(value, reference[name], atol=1e-3)
                if name == "orientation"
                else value == reference[name]
            )
            if not same:
                raise InconsistentSeriesError(
                    patient_id,
                    rel,
                    f"{name} {_fmt(value)} differs from {_fmt(reference[name])} of {first_rel}",
                )

    orientation = reference["orientation"]
    normal = _normal(orientation)
    normal /= np.linalg.norm(normal)
    if normal[2] < 0:  # sort head first whatever the sign convention of the normal
        normal = -normal
    positions = np.array(
        [
            np.dot(_float_list(ds, "ImagePositionPatient", rel, patient_id, 3), normal)
            for rel, ds in unique
        ]
    )
    order = np.argsort(-positions, kind="stable")  # superior -> inferior
    unique = [unique[i] for i in order]
    positions = positions[order]

    steps = -np.diff(positions)
    tolerance = settings.position_tolerance_mm
    for k in np.flatnonzero(steps < tolerance):
        raise DuplicateSliceError(
            patient_id,
            unique[k + 1][0],
            f"duplicate slice: same position ({positions[k]:.2f} mm) as {unique[k][0]}",
        )
    thickness = float(first.get("SliceThickness", 0) or 0)
    if len(steps):
        spacing_mm = float(np.median(steps))
        for k in np.flatnonzero(steps > spacing_mm + tolerance):
            raise MissingSliceError(
                patient_id,
                unique[k + 1][0],
                f"missing slice: {steps[k]:.2f} mm from {unique[k][0]} where the slice "
                f"spacing is {spacing_mm:.2f} mm",
            )
    else:
        spacing_mm = float(first.get("SpacingBetweenSlices", 0) or thickness or 0)
    if thickness <= 0:
        thickness = spacing_mm

    hu, syntaxes = _to_hu(patient_id, unique)
    kvp = first.get("KVP")
    return CTSeries(
        patient_id=patient_id,
        hu=hu,
        pixel_spacing_mm=tuple(float(v) for v in first.PixelSpacing),
        slice_spacing_mm=spacing_mm,
        slice_thickness_mm=thickness,
        positions_mm=positions,
        instance_numbers=np.array([int(ds.get("InstanceNumber", 0) or 0) for _, ds in unique]),
        sop_instance_uids=[str(ds.get("SOPInstanceUID", "")) for _, ds in unique],
        orientation=tuple(orientation),
        origin_mm=tuple(float(v) for v in unique[0][1].ImagePositionPatient),
        transfer_syntaxes=syntaxes,
        kvp=float(kvp) if kvp not in (None, "") else None,
        n_files=len(members),
        warnings=warnings,
    )


def _fmt(value) -> str:
    if isinstance(value, tuple) and len(value) == 2:
        return f"{value[0]:g}x{value[1]:g}"
    return "(" + ", ".join(f"{v:g}" for v in value) + ")"


def _to_hu(patient_id, members) -> tuple[np.ndarray, tuple[str, ...]]:
    rows, cols = int(members[0][1].Rows), int(members[0][1].Columns)
    rescale = [(float(ds.RescaleSlope), float(ds.RescaleIntercept)) for _, ds in members]
    integral = all(s.is_integer() and i.is_integer() for s, i in rescale)
    hu = np.empty((len(members), rows, cols), dtype=np.float32 if not integral else np.int32)
    syntaxes = []
    for n, (rel, ds) in enumerate(members):
        syntax = _syntax(ds)
        if syntax not in syntaxes:
            syntaxes.append(syntax)
            _check_decoder(patient_id, rel, syntax)
        stored = _pixel_array(ds, rel, patient_id)
        if stored.shape != (rows, cols):
            raise InconsistentSeriesError(
                patient_id, rel, f"pixel data shape {stored.shape} is not {rows}x{cols}"
            )
        slope, intercept = rescale[n]
        if integral:
            hu[n] = stored.astype(np.int32) * int(slope) + int(intercept)
        else:
            hu[n] = stored.astype(np.float64) * slope + intercept
    if integral:
        if hu.min(initial=0) >= -32768 and hu.max(initial=0) <= 32767:
            hu = hu.astype(np.int16)
        else:
            hu = hu.astype(np.float32)
    return hu, tuple(str(s.name) for s in syntaxes)


def _syntax(ds: pydicom.Dataset) -> UID:
    return UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))


def _pixel_array(ds: pydicom.Dataset, rel: str, patient_id: str) -> np.ndarray:
    try:
        return ds.pixel_array
    except (ValueError, EOFError, AttributeError, RuntimeError) as exc:
        raise TruncatedDicomError(
            patient_id, rel, f"pixel data cannot be read: {_first_line(exc)}"
        ) from None


def _check_decoder(patient_id: str, rel: str, syntax: UID) -> None:
    if not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DecoderMissingError(
            patient_id, rel, f"transfer syntax {syntax.name} ({syntax}) is not supported"
        ) from None
    if not decoder.is_available:
        package = DECODER_PACKAGES.get(str(syntax), "pylibjpeg pylibjpeg-libjpeg")
        raise DecoderMissingError(
            patient_id,
            rel,
            f"compressed as {syntax.name} and no decoder is installed: pip install {package}",
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# The ingest result on disk --------------------------------------------------------------
QC_COLUMNS = (
    "patient_id",
    "series",
    "modality",
    "n_files",
    "n_slices",
    "matrix",
    "pixel_spacing_mm",
    "slice_spacing_mm",
    "slice_thickness_mm",
    "transfer_syntax",
    "status",
    "kind",
    "reason",
)


def qc_rows(report: StudyReport) -> list[dict]:
    """The patient's rows of results/qc/series.tsv (no identifying values by design)."""
    rows = []
    for s in report.series:
        row = dict.fromkeys(QC_COLUMNS, "")
        row.update(
            patient_id=report.patient_id,
            series=s.series,
            modality=s.modality,
            n_files=s.n_files,
            status=s.status,
            kind=s.kind,
            reason=s.reason,
        )
        if s.status == "accepted" and report.ct is not None:
            ct = report.ct
            row.update(
                n_slices=ct.hu.shape[0],
                matrix=f"{ct.hu.shape[1]}x{ct.hu.shape[2]}",
                pixel_spacing_mm=f"{ct.pixel_spacing_mm[0]:g}x{ct.pixel_spacing_mm[1]:g}",
                slice_spacing_mm=f"{ct.slice_spacing_mm:.3g}",
                slice_thickness_mm=f"{ct.slice_thickness_mm:.3g}",
                transfer_syntax="; ".join(ct.transfer_syntaxes),
            )
        rows.append(row)
    return rows


def volume_of(ct: CTSeries) -> Volume:
    return Volume(
        ct.hu,
        ct.pixel_spacing_mm,
        ct.slice_spacing_mm,
        ct.slice_thickness_mm,
        ct.instance_numbers,
        ct.positions_mm,
        tuple(ct.orientation),
    )
