"""DICOM ingest: series finding, sorting, checks, HU, transfer syntaxes and the PHI guard,
on real (synthetic) DICOM files written by `cacflow synth` and on real CT slices from
pydicom-data."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_rescale

from cacflow.dicom.dicom_io import (
    SeriesGeometry,
    SeriesIdentity,
    derived_uid,
    write_enhanced_ct,
)
from cacflow.dicom.ingest import (
    AmbiguousSeriesError,
    DecoderMissingError,
    DuplicateSliceError,
    EmptyStudyError,
    IdentifiableDataError,
    InconsistentSeriesError,
    IngestSettings,
    MissingLabelsError,
    MissingSliceError,
    MissingTagError,
    NotCTError,
    NotDicomError,
    TruncatedDicomError,
    check_labels,
    qc_rows,
    read_study,
)
from cacflow.patients import pseudonym, read_label_table
from cacflow.pipeline import PatientFiles, StudySettings, process_study, run_patient, write_refused
from cacflow.synthetic.synth import SynthSettings, synth_cohort
from cacflow.tables import read_tsv

PID = "SYN0001"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    synth_cohort(out, 2, SynthSettings(size=64))
    return out


@pytest.fixture(scope="module")
def phi_cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phi")
    synth_cohort(out, 1, SynthSettings(size=64, phi=True))
    return out


@pytest.fixture
def study(cohort, tmp_path) -> Path:
    """A private copy of patient 1's folder, for a test to break."""
    target = tmp_path / PID
    shutil.copytree(cohort / "dicom" / PID, target)
    return target


def truth(cohort: Path, pid: str = PID):
    return np.load(cohort / "truth" / f"{pid}.npz")


def files(study: Path) -> list[Path]:
    return sorted(study.glob("*.dcm"))


def refused(study: Path, error_type, settings=None):
    report = read_study(study, PID, settings)
    assert not report.accepted
    assert isinstance(report.error, error_type), report.error
    reason = report.error.reason
    assert "\n" not in reason and reason.startswith(f"{PID}: ")
    rows = qc_rows(report)
    assert [r["status"] for r in rows].count("refused") == 1
    assert next(r for r in rows if r["status"] == "refused")["reason"] == reason
    return reason


# -- the accepted path ----------------------------------------------------------------
def test_hu_and_geometry_equal_the_truth(cohort):
    report = read_study(cohort / "dicom" / PID, PID)
    assert report.accepted, report.error
    t = truth(cohort)
    ct = report.ct
    np.testing.assert_array_equal(ct.hu, t["hu"])
    np.testing.assert_array_equal(ct.instance_numbers, t["instance_numbers"])
    assert ct.pixel_spacing_mm == pytest.approx(tuple(np.broadcast_to(t["pixel_spacing_mm"], 2)))
    assert ct.slice_spacing_mm == pytest.approx(float(t["slice_thickness_mm"]))
    np.testing.assert_allclose(ct.positions_mm, t["slice_z_mm"], atol=1e-4)
    (row,) = qc_rows(report)
    assert row["status"] == "accepted" and row["n_slices"] == t["hu"].shape[0]


def test_order_comes_from_positions_not_file_names(cohort, study):
    # Reverse the names: IM0001 now holds the most inferior slice.
    paths = files(study)
    for path in paths:
        path.rename(path.with_name("tmp_" + path.name))
    for new, old in zip(reversed(paths), sorted(study.glob("tmp_*")), strict=True):
        old.rename(new)
    report = read_study(study, PID)
    np.testing.assert_array_equal(report.ct.hu, truth(cohort)["hu"])


def test_exact_copy_of_a_file_is_skipped_with_a_note(cohort, study):
    shutil.copy(files(study)[3], study / "copy_of_IM0004.dcm")
    report = read_study(study, PID)
    assert report.accepted
    assert "copy_of_IM0004.dcm is a copy of IM0004.dcm" in qc_rows(report)[0]["reason"]


def test_localizer_and_report_series_are_ignored(cohort, study):
    scout = pydicom.dcmread(files(study)[0])
    scout.SeriesInstanceUID = derived_uid("scout")
    scout.SOPInstanceUID = derived_uid("scout", "1")
    scout.SeriesNumber = 1
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    scout.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    scout.save_as(study / "scout.dcm")
    sr = pydicom.dcmread(files(study)[0])
    del sr.PixelData
    sr.Modality = "SR"
    sr.SeriesInstanceUID = derived_uid("dose")
    sr.SeriesNumber = 999
    sr.save_as(study / "dose.dcm")
    report = read_study(study, PID)
    assert report.accepted
    status = {r["series"]: (r["status"], r["reason"]) for r in qc_rows(report)}
    assert status["2"] == ("accepted", "")
    assert status["1"] == ("ignored", "localizer or non-axial images")
    assert status["999"][0] == "ignored" and "no image data" in status["999"][1]


# -- bad inputs: one clear reason each ------------------------------------------------
def test_empty_folder(tmp_path):
    (tmp_path / PID).mkdir()
    reason = refused(tmp_path / PID, EmptyStudyError)
    assert "empty folder" in reason


def test_not_a_dicom_file(study):
    (study / "IM0100.dcm").write_text("patient notes, not an image\n")
    assert refused(study, NotDicomError) == f"{PID}: IM0100.dcm: not a DICOM file (no DICM prefix)"


def test_truncated_file(study):
    path = files(study)[5]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    reason = refused(study, TruncatedDicomError)
    assert reason.startswith(f"{PID}: {path.name}: ")


def test_non_ct_modality(study):
    for path in files(study):
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    reason = refused(study, NotCTError)
    assert "modality MR, not CT" in reason and "IM0001.dcm" in reason


@pytest.mark.parametrize(
    "keyword, words",
    [("PixelSpacing", "no PixelSpacing"), ("RescaleIntercept", "no RescaleSlope/RescaleIntercept")],
)
def test_missing_tags(study, keyword, words):
    path = files(study)[7]
    ds = pydicom.dcmread(path)
    delattr(ds, keyword)
    ds.save_as(path)
    assert refused(study, MissingTagError).startswith(f"{PID}: {path.name}: {words}")


def test_mixed_matrix_sizes(study):
    path = files(study)[4]
    ds = pydicom.dcmread(path)
    small = ds.pixel_array[::2, ::2].copy()
    ds.Rows, ds.Columns = small.shape
    ds.PixelData = small.tobytes()
    ds.save_as(path)
    reason = refused(study, InconsistentSeriesError)
    assert f"{path.name}: matrix 32x32 differs from 64x64 of IM0001.dcm" in reason


def test_two_series_in_one_folder(study):
    for path in files(study)[:20]:  # a second, shorter reconstruction of the same scan
        ds = pydicom.dcmread(path)
        ds.SeriesNumber = 3
        ds.SeriesInstanceUID = derived_uid("second series")
        ds.SOPInstanceUID = derived_uid("second series", path.name)
        ds.save_as(study / f"B_{path.name}")
    reason = refused(study, AmbiguousSeriesError)
    assert "2 axial CT series in one folder" in reason and "series_choice" in reason
    chosen = read_study(study, PID, IngestSettings(series_choice="largest"))
    assert chosen.accepted
    assert {r["status"] for r in qc_rows(chosen)} == {"accepted", "ignored"}


def test_duplicate_slice_position(study):
    ds = pydicom.dcmread(files(study)[10])
    ds.SOPInstanceUID = derived_uid("duplicate")
    ds.InstanceNumber = 500
    ds.save_as(study / "IM0500.dcm")
    reason = refused(study, DuplicateSliceError)
    assert "duplicate slice" in reason and "IM0011.dcm" in reason


def test_missing_slice(study):
    files(study)[12].unlink()
    reason = refused(study, MissingSliceError)
    assert reason.startswith(f"{PID}: IM0014.dcm: missing slice: 6.00 mm from IM0012.dcm")


def test_missing_decoder_names_the_package(study):
    for path in files(study):
        ds = pydicom.dcmread(path)
        ds.compress(uid.JPEGLSLossless)
        ds.save_as(path)
    # Hide both JPEG-LS decoders (pyjpegls and pylibjpeg) from pydicom, in a fresh process.
    code = (
        "import sys; sys.modules['jpeg_ls'] = None; sys.modules['pylibjpeg'] = None\n"
        "from cacflow.dicom.ingest import read_study\n"
        f"r = read_study({str(study)!r}, {PID!r}); print(type(r.error).__name__, r.error)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        f"{DecoderMissingError.__name__} {PID}: IM0001.dcm: compressed as JPEG-LS Lossless "
        "Image Compression and no decoder is installed: pip install pyjpegls"
    )


# -- transfer syntaxes ----------------------------------------------------------------
@pytest.mark.parametrize(
    "syntax", [uid.RLELossless, uid.JPEG2000Lossless, uid.JPEGLSLossless], ids=str
)
def test_compressed_series_give_the_same_hu(cohort, study, syntax):
    for path in files(study):
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)
    report = read_study(study, PID)
    assert report.accepted, report.error
    assert report.ct.transfer_syntaxes == (syntax.name,)
    np.testing.assert_array_equal(report.ct.hu, truth(cohort)["hu"])


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",  # explicit VR little endian (pydicom itself)
        "693_UNCR.dcm",  # pydicom-data: uncompressed
        "693_J2KR.dcm",  # JPEG 2000 lossless
        "693_J2KI.dcm",  # JPEG 2000 lossy
        "bad_sequence.dcm",  # JPEG Lossless SV1
        "explicit_VR-UN.dcm",  # JPEG 2000 abdomen
        "J2K_pixelrep_mismatch.dcm",
    ],
)
def test_real_ct_slices_match_pydicoms_rescale(tmp_path, name):
    source = get_testdata_file(name)
    ds = pydicom.dcmread(source)
    study = tmp_path / "REAL01"
    study.mkdir()
    shutil.copy(source, study / name)
    settings = IngestSettings(pseudonymize=True)  # real test files carry demo identities
    report = read_study(study, "REAL01", settings)
    assert report.accepted, report.error
    expected = apply_rescale(ds.pixel_array, ds)
    np.testing.assert_array_equal(report.ct.hu[0], expected)
    assert report.ct.transfer_syntaxes == (ds.file_meta.TransferSyntaxUID.name,)


# -- identifiers ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "column, value, problem",
    [
        ("calcium", "maybe", "instance 3: calcium must be 0 or 1, got 'maybe'"),
        ("instance_number", "3a", "instance number '3a' is not an integer"),
    ],
)
def test_bad_label_row_refuses_only_its_study(cohort, column, value, problem):
    rows = [r for r in read_label_table(cohort / "labels.tsv") if r["patient_id"] == PID]
    rows[2] = {**rows[2], column: value}
    report = check_labels(read_study(cohort / "dicom" / PID, PID), rows, PID)
    assert not report.accepted and isinstance(report.error, MissingLabelsError)
    assert report.error.reason == f"{PID}: label table: {problem}"
    assert {row["status"] for row in qc_rows(report)} == {"refused"}
    # The same rows, corrected, are accepted.
    rows[2] = {**rows[2], column: "3" if column == "instance_number" else "0"}
    assert check_labels(read_study(cohort / "dicom" / PID, PID), rows, PID).accepted


def test_identifiable_study_is_refused_without_echoing_values(phi_cohort):
    study = phi_cohort / "dicom" / PID
    report = read_study(study, PID)
    assert isinstance(report.error, IdentifiableDataError)
    reason = report.error.reason
    assert "PatientName" in reason and "PatientBirthDate" in reason
    ds = pydicom.dcmread(files(study)[0])
    for value in (str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.InstitutionName):
        assert value not in reason


def test_pseudonymize_accepts_and_keeps_no_identifier(phi_cohort, tmp_path):
    study = phi_cohort / "dicom" / PID
    report = read_study(study, PID, IngestSettings(pseudonymize=True))
    assert report.accepted
    # What the workflow writes of the study: QC tables, heart mask, images, manifests.
    settings = StudySettings(ingest=IngestSettings(pseudonymize=True))
    assert process_study(study, tmp_path, PID, settings, log=io.StringIO()) == 0
    ds = pydicom.dcmread(files(study)[0])
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.suffix == ".png" for path in written)
    blob = b"".join(path.read_bytes() for path in written) + str(qc_rows(report)).encode()
    for value in (str(ds.PatientName), ds.PatientID, ds.StudyDate, ds.InstitutionName):
        assert value.encode() not in blob


def test_the_chain_draws_the_gallery_of_the_candidates_it_scored(study, tmp_path):
    # `cacflow ingest` draws no gallery; the workflow's per-patient rule asks for one.
    layout = PatientFiles.in_folder(tmp_path / "out", PID)
    assert layout.gallery is None
    where = replace(layout, gallery=tmp_path / "out" / "gallery.png")
    _, result = run_patient(study, PID, StudySettings(), where)
    score = result.score
    kept = [c.lesion for c in score.candidates if c.outcome == "kept"]
    assert len(kept) == score.row["n_lesions"] == len(score.lesions)
    assert sum(lesion.score for lesion in kept) == pytest.approx(score.row["agatston"], abs=0.01)
    with Image.open(where.gallery) as png:
        assert png.format == "PNG" and png.width >= 600
    # A refused study still gets its gallery, which says so, so the report's figure exists.
    files(study)[3].write_text("not an image\n")
    refused_where = replace(where, gallery=tmp_path / "refused.png")
    report, result = run_patient(study, PID, StudySettings(), refused_where)
    assert result is None and not report.accepted
    write_refused(refused_where, PID)
    with Image.open(refused_where.gallery) as png:
        assert png.format == "PNG"


def test_pseudonym_pattern_and_allowed_tags(study):
    for path in files(study):
        ds = pydicom.dcmread(path)
        ds.PatientID = "CAC-0042"
        ds.StudyDate = "20200101"  # shifted by the user's anonymizer, declared safe below
        ds.save_as(path)
    refused(study, IdentifiableDataError)
    settings = IngestSettings(pseudonym_pattern=r"CAC-\d{4}", allowed_identity_tags=("StudyDate",))
    assert read_study(study, PID, settings).accepted


def test_pseudonyms_are_stable_and_keyed():
    assert pseudonym("12345678", "k1") == pseudonym("12345678", "k1")
    assert pseudonym("12345678", "k1") != pseudonym("12345678", "k2")
    assert pseudonym("12345678", "k1").startswith("P") and len(pseudonym("x", "k")) == 13
    with pytest.raises(ValueError, match="key"):
        pseudonym("12345678", "")


def test_enhanced_ct_gives_the_same_volume_and_results(tmp_path):
    # One study written as single-frame slices and as one Enhanced CT file (frames placed
    # by the per-frame functional groups): the same HU volume, the same outputs.
    synth_cohort(tmp_path / "cohort", 2, SynthSettings(size=96, seed=3))
    pid = "SYN0002"  # with coronary calcium
    single = tmp_path / "cohort" / "dicom" / pid
    ct = read_study(single, pid).ct
    geometry = SeriesGeometry(
        pixel_spacing_mm=ct.pixel_spacing_mm[0],
        slice_thickness_mm=ct.slice_thickness_mm,
        origin_x_mm=ct.origin_mm[0],
        origin_y_mm=ct.origin_mm[1],
        slice_z_mm=tuple(ct.positions_mm),  # instance k + 1 is slice k of this series
    )
    enhanced = tmp_path / "enhanced" / pid
    write_enhanced_ct(enhanced / "CT0001.dcm", ct.hu, geometry, SeriesIdentity(pid, pid, ("e",)))
    assert int(pydicom.dcmread(enhanced / "CT0001.dcm").NumberOfFrames) == ct.hu.shape[0]
    report = read_study(enhanced, pid)
    assert report.accepted, report.error
    np.testing.assert_array_equal(report.ct.hu, ct.hu)
    np.testing.assert_array_equal(report.ct.instance_numbers, ct.instance_numbers)
    np.testing.assert_allclose(report.ct.positions_mm, ct.positions_mm, atol=1e-4)
    assert report.ct.pixel_spacing_mm == ct.pixel_spacing_mm
    (row,) = qc_rows(report)
    assert row["n_files"] == 1 and row["n_slices"] == ct.hu.shape[0]

    labels = read_label_table(tmp_path / "cohort" / "labels" / f"{pid}.tsv")
    truth_path = tmp_path / "cohort" / "truth" / f"{pid}.npz"
    for study, out in ((single, "out_single"), (enhanced, "out_enhanced")):
        code = process_study(study, tmp_path / out, pid, StudySettings(), labels, truth_path)
        assert code == 0
    outputs = sorted(
        p.relative_to(tmp_path / "out_single")
        for p in (tmp_path / "out_single").rglob("*")
        if p.is_file() and p.name != "series.tsv"  # the file count differs
    )
    assert any("agatston" in str(p) for p in outputs)
    for path in outputs:
        assert (tmp_path / "out_single" / path).read_bytes() == (
            tmp_path / "out_enhanced" / path
        ).read_bytes(), path


def test_a_study_without_a_heart_is_flagged(tmp_path):
    # A real CT slice of a head (pydicom's test data): accepted by ingest, but no heart.
    study = tmp_path / "HEAD01"
    study.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), study / "CT_small.dcm")
    settings = StudySettings(ingest=IngestSettings(pseudonymize=True))
    log = io.StringIO()
    assert process_study(study, tmp_path / "out", "HEAD01", settings, log=log) == 0
    assert "HEAD01: warning: no heart found on any slice" in log.getvalue()
    (row,) = read_tsv(tmp_path / "out" / "qc" / "segmentation.tsv")
    assert row["n_mask_slices"] == "0" and row["warning"].startswith("no heart found")
