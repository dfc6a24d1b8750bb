"""Writing CT series as DICOM (CT Image Storage, one file per slice; or Enhanced CT Image
Storage, one multi-frame file).

Tags follow DICOM PS3.3 C.8.2.1 (CT Image) and C.7.6.2 (Image Plane). Pixels are stored
as signed 16-bit integers with RescaleIntercept -1024, so HU = stored - 1024, as most
scanners do. Every UID is derived from caller-supplied entropy, so the same seed gives
byte-identical files. Files are written under a temporary name and renamed, so a killed
job never leaves a half-written slice.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian

RESCALE_INTERCEPT = -1024.0


@dataclass(frozen=True)
class SeriesGeometry:
    pixel_spacing_mm: float  # square pixels
    slice_thickness_mm: float
    origin_x_mm: float  # ImagePositionPatient x, y of the first pixel
    origin_y_mm: float
    slice_z_mm: tuple[float, ...]  # one per slice, in InstanceNumber order


@dataclass(frozen=True)
class SeriesIdentity:
    """Who and when. Anonymized series carry only the pseudonym; `extra` adds tags."""

    patient_id: str
    patient_name: str
    uid_entropy: tuple[str, ...]
    extra: dict[str, str] = field(default_factory=dict)


def derived_uid(*entropy: str) -> str:
    """A UUID-derived UID (2.25.<uuid>, PS3.5 B.2) whose UUID is a hash of `entropy`.

    pydicom's generate_uid(prefix=None) ignores its entropy and is random; the cohort must
    be byte-identical for a given seed, so the UUID is derived here.
    """
    digest = hashlib.sha256("\x1f".join(entropy).encode()).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16], version=4).int}"


def series_uids(entropy: tuple[str, ...]) -> dict[str, str]:
    return {
        "study": derived_uid(*entropy, "study"),
        "series": derived_uid(*entropy, "series"),
        "frame": derived_uid(*entropy, "frame-of-reference"),
    }


def sop_instance_uid(entropy: tuple[str, ...], instance_number: int) -> str:
    return derived_uid(*entropy, "sop", str(instance_number))


def write_ct_series(
    out_dir: Path,
    hu: np.ndarray,
    geometry: SeriesGeometry,
    identity: SeriesIdentity,
    kvp: float = 120.0,
    description: str = "CaSc 3.0 STANDARD",
) -> list[str]:
    """Write one file per slice (`IM0001.dcm`, ...); return the SOPInstanceUIDs in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    uids = series_uids(identity.uid_entropy)
    template = _series_template(hu.shape[1:], geometry, identity, uids, kvp, description)
    stored = np.clip(np.asarray(hu, dtype=np.int32) - int(RESCALE_INTERCEPT), -32768, 32767)
    stored = stored.astype("<i2")
    sop_uids = []
    for index, z in enumerate(geometry.slice_z_mm):
        instance = index + 1
        ds = template.copy()
        ds.file_meta = template.file_meta.copy()
        sop_uid = sop_instance_uid(identity.uid_entropy, instance)
        ds.SOPInstanceUID = sop_uid
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.InstanceNumber = instance
        ds.ImagePositionPatient = [_ds(geometry.origin_x_mm), _ds(geometry.origin_y_mm), _ds(z)]
        ds.SliceLocation = _ds(z)
        ds.PixelData = stored[index].tobytes()
        target = out_dir / f"IM{instance:04d}.dcm"
        partial = target.with_name(target.name + ".part")
        ds.save_as(partial, enforce_file_format=True)
        os.replace(partial, target)
        sop_uids.append(sop_uid)
    return sop_uids


def write_enhanced_ct(
    path: Path,
    hu: np.ndarray,
    geometry: SeriesGeometry,
    identity: SeriesIdentity,
    kvp: float = 120.0,
    description: str = "CaSc 3.0 STANDARD",
) -> None:
    """The same series as `write_ct_series`, as one Enhanced CT Image Storage file (PS3.3
    A.38): every slice a frame, its position in the per-frame functional groups, spacing,
    orientation and rescale in the shared ones."""
    uids = series_uids(identity.uid_entropy)
    ds = _series_template(hu.shape[1:], geometry, identity, uids, kvp, description)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid(
        identity.uid_entropy, 0
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(geometry.slice_z_mm)
    measures = Dataset()
    measures.PixelSpacing = ds.PixelSpacing
    measures.SliceThickness = ds.SliceThickness
    orientation = Dataset()
    orientation.ImageOrientationPatient = ds.ImageOrientationPatient
    rescale = Dataset()
    rescale.RescaleIntercept, rescale.RescaleSlope = ds.RescaleIntercept, ds.RescaleSlope
    rescale.RescaleType = ds.RescaleType
    shared = Dataset()
    shared.PixelMeasuresSequence = [measures]
    shared.PlaneOrientationSequence = [orientation]
    shared.PixelValueTransformationSequence = [rescale]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for index, z in enumerate(geometry.slice_z_mm):
        position = Dataset()
        position.ImagePositionPatient = [
            _ds(geometry.origin_x_mm), _ds(geometry.origin_y_mm), _ds(z)
        ]  # fmt: skip
        content = Dataset()
        content.InStackPositionNumber = index + 1
        frame = Dataset()
        frame.PlanePositionSequence = [position]
        frame.FrameContentSequence = [content]
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    for keyword in (*_FRAME_KEYWORDS, "SpacingBetweenSlices", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    stored = np.clip(np.asarray(hu, dtype=np.int32) - int(RESCALE_INTERCEPT), -32768, 32767)
    ds.PixelData = stored.astype("<i2").tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    ds.save_as(partial, enforce_file_format=True)
    os.replace(partial, path)


# Single-frame attributes that an Enhanced CT image keeps in its functional groups.
_FRAME_KEYWORDS = (
    "PixelSpacing",
    "SliceThickness",
    "ImageOrientationPatient",
    "RescaleIntercept",
    "RescaleSlope",
    "RescaleType",
)


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters (DICOM DS)."""
    return f"{value:.10g}"


def _series_template(
    shape,
    geometry: SeriesGeometry,
    identity: SeriesIdentity,
    uids: dict[str, str],
    kvp: float,
    description: str,
) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.Modality = "CT"
    ds.Manufacturer = "cacflow synthetic"
    ds.StudyDescription = "Calcium score"
    ds.SeriesDescription = description
    ds.BodyPartExamined = "HEART"
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    # Type 2 attributes: present and empty in an anonymized series.
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic: no real patient"
    ds.SeriesNumber = 2
    ds.PatientPosition = "HFS"
    ds.KVP = _ds(kvp)
    ds.ConvolutionKernel = "STANDARD"
    ds.SliceThickness = _ds(geometry.slice_thickness_mm)
    ds.SpacingBetweenSlices = _ds(geometry.slice_thickness_mm)
    ds.PixelSpacing = [_ds(geometry.pixel_spacing_mm), _ds(geometry.pixel_spacing_mm)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = _ds(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    for keyword, value in identity.extra.items():
        setattr(ds, keyword, value)
    if identity.extra:
        ds.PatientIdentityRemoved = "NO"
        del ds.DeidentificationMethod
    return ds
