"""Stanford AIMI COCA (gated calcium-scoring CT with calcium contours): read and write.

Layout under ROOT (the `Gated_release_final` folder, or the folder holding it):

    patient/<id>/<series>/*.dcm
    calcium_xml/<id>.xml        an Apple property list: Images -> [{ImageIndex,
                                NumberOfROIs, ROIs: [{Name, Point_px, Point_mm, ...}]}]
    scores.csv                  optional: the dataset's scores per patient (id + "A")

An ROI's points are strings, "(x, y)" in pixels (x the column) and "(x, y, z)" in mm. Its
slice is the one whose ImagePositionPatient z is the points' z: ImageIndex counts slices
sorted by z ascending, which need not follow InstanceNumber, so it is not used. Every ROI
is a lesion of its own; ROIs never overwrite each other's pixels. A patient without an XML
has no calcium where the score table says 0 (or there is no score table).

`write_coca_patient` writes a synthetic patient in this format (`cacflow synth --format
coca`), for tests and for trying the converter.
"""

from __future__ import annotations

import csv
import plistlib
import shutil
import sys
from pathlib import Path
from xml.parsers.expat import ExpatError

import numpy as np
import pydicom
from scipy import ndimage
from skimage.draw import polygon
from skimage.measure import find_contours

from cacflow.convert.cohort import (
    ConversionError,
    ConvertedPatient,
    first_pixel_mm,
    write_patient,
    write_tables,
)
from cacflow.dicom.ingest import CTSeries, IngestSettings, read_study, volume_of
from cacflow.imaging.volume import Volume

COCA_NAMES = {
    "Left Coronary Artery": "LM",
    "Left Anterior Descending Artery": "LAD",
    "Left Circumflex Artery": "LCX",
    "Right Coronary Artery": "RCA",
}
SCORE_COLUMNS = {"LCA": "LM", "LAD": "LAD", "LCX": "LCX", "RCA": "RCA"}
# An ROI's z and its slice's ImagePositionPatient z are the same number, written twice.
Z_TOLERANCE_MM = 0.05


def dataset_root(root: Path) -> Path:
    root = Path(root)
    return root / "Gated_release_final" if (root / "Gated_release_final").is_dir() else root


# Reading --------------------------------------------------------------------------------
def _numbers(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in str(text).strip().strip("()").split(","))
    except ValueError:
        values = ()
    if len(values) != n:
        raise ConversionError(f"{what}: {text!r} is not {n} numbers in parentheses")
    return values


def read_rois(path: Path) -> list[tuple[str, np.ndarray, float]]:
    """(artery, points (x, y) in pixels, z in mm) of every ROI in a calcium XML."""
    try:
        with open(path, "rb") as handle:
            plist = plistlib.load(handle)
        images = plist["Images"]
        if not isinstance(images, list):
            raise TypeError("Images is not a list")
    except (plistlib.InvalidFileException, ExpatError, ValueError, KeyError, TypeError) as exc:
        raise ConversionError(f"{path.name}: not a COCA calcium property list ({exc})") from None
    rois = []
    for image in images:
        for k, roi in enumerate(image.get("ROIs") or []):
            where = f"{path.name}: image {image.get('ImageIndex', '?')}, ROI {k + 1}"
            name = roi.get("Name")
            if name not in COCA_NAMES:
                raise ConversionError(f"{where}: unknown artery name {name!r}")
            points = np.array([_numbers(p, 2, where) for p in roi.get("Point_px") or []])
            z = [_numbers(p, 3, where)[2] for p in roi.get("Point_mm") or []]
            if len(points) == 0 or not z:
                raise ConversionError(f"{where}: no points")
            rois.append((COCA_NAMES[name], points, float(np.median(z))))
    return rois


def slice_z_mm(ct: CTSeries) -> np.ndarray:
    """Each slice's ImagePositionPatient z (slices superior to inferior)."""
    normal = np.cross(ct.orientation[:3], ct.orientation[3:])
    normal = normal / np.linalg.norm(normal)
    return ct.origin_mm[2] + (ct.positions_mm - ct.positions_mm[0]) * normal[2]


def rasterize(rois, volume: Volume, z: np.ndarray, where: str) -> tuple[np.ndarray, list[str]]:
    """The lesion map of `rois` on the volume's slices (matched by their z), and each
    lesion's artery (index 0 empty)."""
    labels = np.zeros(volume.hu.shape, dtype=np.int32)
    rows, cols = volume.hu.shape[1:]
    for lesion, (artery, points, roi_z) in enumerate(rois, start=1):
        k = int(np.argmin(np.abs(z - roi_z)))
        if abs(z[k] - roi_z) > Z_TOLERANCE_MM:
            raise ConversionError(
                f"{where}: ROI {lesion} ({artery}) at z {roi_z:.2f} mm matches no slice "
                f"(slices at {z.min():.2f} to {z.max():.2f} mm)"
            )
        x, y = points[:, 0], points[:, 1]
        if x.min() < -0.5 or y.min() < -0.5 or x.max() > cols - 0.5 or y.max() > rows - 0.5:
            raise ConversionError(
                f"{where}: ROI {lesion} ({artery}) on slice {int(volume.instance_numbers[k])} "
                f"reaches outside the {cols}x{rows} image"
            )
        if len(points) >= 3:
            rr, cc = polygon(y, x, shape=(rows, cols))
        else:  # a point or a segment: the pixels it touches
            rr, cc = np.round(y).astype(int), np.round(x).astype(int)
        free = labels[k, rr, cc] == 0
        labels[k, rr[free], cc[free]] = lesion
    return labels, ["", *(artery for artery, _, _ in rois)]


def read_score_table(root: Path) -> dict[str, float] | None:
    """{patient id: total} of the dataset's scores.csv (ids without their "A"), or None."""
    path = root / "scores.csv"
    if not path.is_file():
        if (root / "scores.xlsx").is_file():
            print(
                f"{root / 'scores.xlsx'}: save it as scores.csv to compare with it",
                file=sys.stderr,
            )
        return None
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return None
    columns = {c.strip().lower(): c for c in rows[0]}
    id_column = next((columns[c] for c in columns if c in ("pid", "patient_id", "id")), None)
    total = columns.get("total")
    if id_column is None or total is None:
        raise ConversionError(f"{path}: no patient id or total column in {list(rows[0])}")
    return {str(row[id_column]).strip().removesuffix("A"): float(row[total] or 0.0) for row in rows}


def convert_patient(
    root: Path, patient_id: str, settings: IngestSettings, expect_calcium: bool | None
) -> ConvertedPatient:
    """One COCA patient as a `ConvertedPatient` (ConversionError: why not)."""
    report = read_study(root / "patient" / patient_id, patient_id, settings)
    if not report.accepted:
        raise ConversionError(report.error.reason)
    volume = volume_of(report.ct)
    xml = root / "calcium_xml" / f"{patient_id}.xml"
    if xml.is_file():
        rois = read_rois(xml)
    elif expect_calcium:
        raise ConversionError(
            f"{patient_id}: no calcium_xml/{patient_id}.xml, but the score table gives calcium"
        )
    else:
        rois = []
    labels, arteries = rasterize(rois, volume, slice_z_mm(report.ct), xml.name)
    return ConvertedPatient(patient_id, volume, labels, arteries)


def convert_coca(
    root: Path, out: Path, settings: IngestSettings | None = None, log=sys.stderr
) -> list[dict]:
    """Convert every patient under ROOT into the own-data layout in `out`; return the
    conversion rows (a patient that cannot be converted is left out, with its reason)."""
    root, out = dataset_root(root), Path(out)
    settings = settings or IngestSettings()
    if not (root / "patient").is_dir():
        raise ConversionError(f"{root}: no patient/ folder (is this COCA's Gated_release_final?)")
    scores = read_score_table(root)
    patients = sorted(p.name for p in (root / "patient").iterdir() if p.is_dir())
    orphans = sorted(p.stem for p in (root / "calcium_xml").glob("*.xml") if p.stem not in patients)
    references, labels, conversion = [], [], []
    for n, pid in enumerate(patients, start=1):
        table_total = None if scores is None else scores.get(pid)
        row = {"patient_id": pid, "dataset_agatston_total": table_total}
        try:
            expect = None if table_total is None else table_total > 0
            patient = convert_patient(root, pid, settings, expect)
            reference, label_rows = write_patient(out, patient)
        except ConversionError as error:
            conversion.append({**row, "status": "left out", "reason": str(error)})
            print(f"[{n}/{len(patients)}] {pid}: left out: {error}", file=log)
            continue
        target = out / "dicom" / pid
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(root / "patient" / pid, target)
        references.append(reference)
        labels += label_rows
        total = reference["agatston_total"]
        conversion.append(
            {
                **row,
                "status": "converted",
                "n_slices": patient.volume.hu.shape[0],
                "n_rois": len(patient.lesion_artery) - 1,
                "agatston_total": total,
                "difference": "" if table_total is None else round(total - table_total, 3),
            }
        )
        print(f"[{n}/{len(patients)}] {pid}: Agatston {total:.1f}", file=log)
    for stem in orphans:
        conversion.append(
            {"patient_id": stem, "status": "left out", "reason": f"{stem}.xml: no series"}
        )
        print(f"{stem}: left out: calcium_xml/{stem}.xml has no series", file=log)
    write_tables(out, references, labels, conversion)
    return conversion


# Writing (synthetic fixtures) -----------------------------------------------------------
def lesion_outlines(mask: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (x, y) along the pixel edges of a 2-D mask, holes filled: the
    polygon of each holds exactly the mask's pixel centres."""
    filled = ndimage.binary_fill_holes(mask)
    fine = np.kron(np.pad(filled, 1), np.ones((2, 2))).astype(float)
    outlines = []
    for contour in find_contours(fine, 0.5):
        yx = contour / 2.0 - 0.25 - 1.0  # back to the mask's pixel coordinates
        outlines.append(yx[:-1, ::-1])  # x, y; find_contours repeats the first point
    return outlines


def coca_rois(
    lesion_labels: np.ndarray, lesion_artery, slice_z: np.ndarray, origin, spacing: float
):
    """The `Images` list of a calcium XML for a lesion map (slices in the series' order)."""
    names = {artery: name for name, artery in COCA_NAMES.items()}
    ascending = {int(k): i for i, k in enumerate(np.argsort(slice_z, kind="stable"))}
    images = []
    for k in np.flatnonzero(lesion_labels.any(axis=(1, 2))):
        rois = []
        for lesion in np.unique(lesion_labels[k])[1:]:
            for outline in lesion_outlines(lesion_labels[k] == lesion):
                x_mm = origin[0] + outline[:, 0] * spacing
                y_mm = origin[1] + outline[:, 1] * spacing
                rois.append(
                    {
                        "Name": names[str(lesion_artery[lesion])],
                        "Point_px": [f"({x:.3f}, {y:.3f})" for x, y in outline],
                        "Point_mm": [
                            f"({x:.3f}, {y:.3f}, {slice_z[k]:.10g})"
                            for x, y in zip(x_mm, y_mm, strict=True)
                        ],
                        "NumberOfPoints": len(outline),
                    }
                )
        images.append({"ImageIndex": ascending[int(k)], "NumberOfROIs": len(rois), "ROIs": rois})
    return images


def write_coca_xml(path: Path, images: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        plistlib.dump({"Images": images}, handle)


def synth_coca(
    out: Path, n_patients: int, settings, instance_order: str = "descending", log=sys.stderr
) -> list[dict]:
    """A synthetic cohort in COCA's layout under `out`/Gated_release_final (the truth
    beside it in `out`/truth): InstanceNumber 1 at the top of the scan ("descending" in z,
    as the synthetic series) or at the bottom ("ascending")."""
    from cacflow.synthetic.synth import synth_cohort

    out = Path(out)
    root = out / "Gated_release_final"
    scratch = out / "synthetic"
    rows = synth_cohort(scratch, n_patients, settings, log=log)
    score_rows = []
    for row in rows:
        pid = row["patient_id"]
        series = root / "patient" / pid / "1"
        series.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(scratch / "dicom" / pid, series)
        if instance_order == "ascending":
            _reverse_instance_numbers(series)
        with np.load(scratch / "truth" / f"{pid}.npz") as truth:
            images = coca_rois(
                truth["lesion_labels"],
                truth["lesion_artery"],
                truth["slice_z_mm"],
                first_pixel_mm(series),
                float(truth["pixel_spacing_mm"][0]),
            )
        if images:
            write_coca_xml(root / "calcium_xml" / f"{pid}.xml", images)
        score_rows.append(
            {
                "pid": f"{pid}A",
                "LCA": 0.0,
                **{c: row[f"agatston_{c.lower()}"] for c in ("LAD", "LCX", "RCA")},
                "total": row["agatston_total"],
            }
        )
    (out / "truth").mkdir(exist_ok=True)
    for path in (scratch / "truth").iterdir():
        shutil.move(path, out / "truth" / path.name)
    shutil.rmtree(scratch)
    with open(root / "scores.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["pid", "LCA", "LAD", "LCX", "RCA", "total"])
        writer.writeheader()
        writer.writerows(score_rows)
    return rows


def _reverse_instance_numbers(series: Path) -> None:
    paths = sorted(series.glob("*.dcm"))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = len(paths) + 1 - int(ds.InstanceNumber)
        ds.save_as(path, enforce_file_format=True)
