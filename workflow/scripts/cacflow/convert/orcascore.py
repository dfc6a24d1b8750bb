"""orCaScore (MICCAI 2014: non-contrast cardiac CT of four vendors): read and write.

Under ROOT (searched through sub-folders), a patient is a pair of MetaImages:

    <id>CTI.mhd + .raw    the CT image, voxel values in HU
    <id>R.mhd + .raw      the reference: 0 none, 1 LAD (the left main included), 2 LCX, 3 RCA

The image becomes a DICOM CT series (geometry kept, oriented as DICOM's patient axes),
read back through ingest like any study; each 3-D connected region of one artery's label is
a lesion. `write_orcascore_patient` writes a synthetic patient in this format (`cacflow
synth --format orcascore`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from cacflow.convert.cohort import (
    ConversionError,
    ConvertedPatient,
    first_pixel_mm,
    write_patient,
    write_tables,
)
from cacflow.dicom.dicom_io import SeriesGeometry, SeriesIdentity, write_ct_series
from cacflow.dicom.ingest import IngestSettings, read_study, volume_of

ARTERY_CODES = {1: "LAD", 2: "LCX", 3: "RCA"}
IMAGE_SUFFIX, REFERENCE_SUFFIX = "CTI.mhd", "R.mhd"
_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4,
    "MET_UINT": 4, "MET_LONG": 8, "MET_ULONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip


def check_metaimage(path: Path) -> None:
    """A clear reason when the header or its raw data file cannot be read whole."""
    try:
        header = {
            key.strip(): value.strip()
            for key, _, value in (
                line.partition("=") for line in path.read_text(errors="replace").splitlines()
            )
            if value
        }
    except OSError as exc:
        raise ConversionError(f"{path.name}: unreadable ({exc.strerror})") from None
    data = header.get("ElementDataFile", "")
    if not data or data == "LOCAL" or header.get("CompressedData", "False") == "True":
        return  # SimpleITK checks these itself
    raw = path.parent / data
    if not raw.is_file():
        raise ConversionError(f"{path.name}: its data file {data} is missing")
    try:
        size = np.prod([int(v) for v in header["DimSize"].split()])
        channels = int(header.get("ElementNumberOfChannels", "1"))
        expected = int(size) * channels * _BYTES[header["ElementType"]]
    except (KeyError, ValueError):
        raise ConversionError(f"{path.name}: no usable DimSize and ElementType") from None
    if raw.stat().st_size < expected:
        raise ConversionError(
            f"{path.name}: its data file {data} is short ({raw.stat().st_size} of {expected} bytes)"
        )


def read_metaimage(path: Path) -> sitk.Image:
    check_metaimage(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ConversionError(f"{path.name}: not a readable MetaImage ({exc})") from None
    if image.GetDimension() != 3:
        raise ConversionError(f"{path.name}: {image.GetDimension()}-D, not a 3-D volume")
    return sitk.DICOMOrient(image, "LPS")  # rows along y, columns along x, slices along z


def find_patients(root: Path) -> tuple[dict[str, tuple[Path, Path | None]], list[str]]:
    """{id: (image, reference or None)}, and the ids of references without an image."""
    root = Path(root)
    images = {p.name[: -len(IMAGE_SUFFIX)]: p for p in root.rglob(f"*{IMAGE_SUFFIX}")}
    references = {
        p.name[: -len(REFERENCE_SUFFIX)]: p
        for p in root.rglob(f"*{REFERENCE_SUFFIX}")
        if not p.name.endswith(IMAGE_SUFFIX)
    }
    pairs = {pid: (images[pid], references.get(pid)) for pid in sorted(images)}
    return pairs, sorted(set(references) - set(images))


def convert_patient(
    pid: str, image_path: Path, reference_path: Path | None, out: Path, settings: IngestSettings
) -> ConvertedPatient:
    if reference_path is None:
        raise ConversionError(f"{image_path.name}: no reference {pid}{REFERENCE_SUFFIX} beside it")
    image, reference = read_metaimage(image_path), read_metaimage(reference_path)
    if image.GetSize() != reference.GetSize():
        raise ConversionError(
            f"{reference_path.name}: label volume of {reference.GetSize()} voxels, the image "
            f"{image.GetSize()}"
        )
    codes = sitk.GetArrayFromImage(reference).astype(np.int64)
    unknown = sorted(set(np.unique(codes).tolist()) - {0, *ARTERY_CODES})
    if unknown:
        raise ConversionError(f"{reference_path.name}: label values {unknown} are not 0-3")
    spacing_x, spacing_y, spacing_z = image.GetSpacing()
    if abs(spacing_x - spacing_y) > 1e-4:
        raise ConversionError(
            f"{image_path.name}: pixels of {spacing_x:g} x {spacing_y:g} mm (square ones only)"
        )
    hu = sitk.GetArrayFromImage(image)  # z ascending
    origin = image.GetOrigin()
    geometry = SeriesGeometry(
        pixel_spacing_mm=spacing_x,
        slice_thickness_mm=spacing_z,
        origin_x_mm=origin[0],
        origin_y_mm=origin[1],
        slice_z_mm=tuple(origin[2] + k * spacing_z for k in range(hu.shape[0])),
    )
    target = Path(out) / "dicom" / pid
    shutil.rmtree(target, ignore_errors=True)
    write_ct_series(target, hu, geometry, SeriesIdentity(pid, pid, ("cacflow-orcascore", pid)))
    report = read_study(target, pid, settings)
    if not report.accepted:
        shutil.rmtree(target)
        raise ConversionError(report.error.reason)
    volume = volume_of(report.ct)
    labels, arteries = lesions_of(codes)
    order = volume.instance_numbers - 1  # instance k + 1 is the array's slice k
    return ConvertedPatient(pid, volume, labels[order], arteries)


def lesions_of(codes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Each 3-D connected region (26 neighbours) of one artery's code as a lesion."""
    labels = np.zeros(codes.shape, dtype=np.int32)
    arteries = [""]
    for code, artery in ARTERY_CODES.items():
        regions, n = ndimage.label(codes == code, np.ones((3, 3, 3), dtype=bool))
        labels[regions > 0] = regions[regions > 0] + len(arteries) - 1
        arteries += [artery] * n
    return labels, arteries


def convert_orcascore(
    root: Path, out: Path, settings: IngestSettings | None = None, log=sys.stderr
) -> list[dict]:
    """Convert every image-reference pair under ROOT into the own-data layout in `out`."""
    settings = settings or IngestSettings()
    pairs, orphans = find_patients(root)
    if not pairs and not orphans:
        raise ConversionError(f"{root}: no *{IMAGE_SUFFIX} images (is this orCaScore?)")
    references, labels, conversion = [], [], []
    for n, (pid, (image, reference)) in enumerate(pairs.items(), start=1):
        try:
            patient = convert_patient(pid, image, reference, out, settings)
            row, label_rows = write_patient(out, patient)
        except ConversionError as error:
            conversion.append({"patient_id": pid, "status": "left out", "reason": str(error)})
            print(f"[{n}/{len(pairs)}] {pid}: left out: {error}", file=log)
            continue
        references.append(row)
        labels += label_rows
        conversion.append(
            {
                "patient_id": pid,
                "status": "converted",
                "n_slices": patient.volume.hu.shape[0],
                "n_rois": len(patient.lesion_artery) - 1,
                "agatston_total": row["agatston_total"],
            }
        )
        print(f"[{n}/{len(pairs)}] {pid}: Agatston {row['agatston_total']:.1f}", file=log)
    for pid in orphans:
        reason = f"{pid}{REFERENCE_SUFFIX}: no image {pid}{IMAGE_SUFFIX}"
        conversion.append({"patient_id": pid, "status": "left out", "reason": reason})
        print(f"{pid}: left out: {reason}", file=log)
    write_tables(out, references, labels, conversion)
    return conversion


# Writing (synthetic fixtures) -----------------------------------------------------------
def write_metaimage(path: Path, array: np.ndarray, spacing, origin) -> None:
    """A volume (z, y, x; z ascending) as `path` (.mhd) and its .raw."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetOrigin(tuple(float(v) for v in origin))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def synth_orcascore(out: Path, n_patients: int, settings, log=sys.stderr) -> list[dict]:
    """A synthetic cohort in orCaScore's format under `out`/images (the truth beside it in
    `out`/truth), named by the synthetic IDs (SYN0001CTI.mhd, SYN0001R.mhd, ...)."""
    from cacflow.synthetic.synth import synth_cohort

    out = Path(out)
    scratch = out / "synthetic"
    rows = synth_cohort(scratch, n_patients, settings, log=log)
    images = out / "images"
    for row in rows:
        pid = row["patient_id"]
        volume = volume_of(read_study(scratch / "dicom" / pid, pid).ct)
        with np.load(scratch / "truth" / f"{pid}.npz") as truth:
            lesion_labels = truth["lesion_labels"]
            artery = truth["lesion_artery"]
            kind = truth["lesion_kind"]
            origin = (*first_pixel_mm(scratch / "dicom" / pid), float(truth["slice_z_mm"].min()))
        code_of = {artery: code for code, artery in ARTERY_CODES.items()}
        per_lesion = np.array(
            [
                code_of.get(str(a), 0) if k == "coronary" else 0
                for a, k in zip(artery, kind, strict=True)
            ]
        )
        spacing = (*volume.pixel_spacing_mm[::-1], volume.slice_spacing_mm)
        # The volume and the truth run superior to inferior: z ascending is the reverse.
        write_metaimage(images / f"{pid}{IMAGE_SUFFIX}", volume.hu[::-1], spacing, origin)
        codes = per_lesion[lesion_labels][::-1].astype(np.uint8)
        write_metaimage(images / f"{pid}{REFERENCE_SUFFIX}", codes, spacing, origin)
    (out / "truth").mkdir(exist_ok=True)
    for path in (scratch / "truth").iterdir():
        shutil.move(path, out / "truth" / path.name)
    shutil.rmtree(scratch)
    return rows
