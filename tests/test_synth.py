"""The synthetic cohort: DICOM that reads back, truth that is self-consistent, anatomy and
a population that look like calcium-scoring CT."""

import collections
import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from cacflow.patients import synthetic_patient_ids
from cacflow.scoring.agatston import RISK_CATEGORIES, agatston_score
from cacflow.synthetic import phantom
from cacflow.synthetic.acquisition import Acquisition, Grid
from cacflow.synthetic.anatomy import sample_anatomy
from cacflow.synthetic.geometry import Ellipsoid
from cacflow.synthetic.synth import SynthSettings, coronary_slices, simulate_patient

CACFLOW = Path(sys.executable).parent / "cacflow"
COHORT_SEED = 11


def synth(out: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(CACFLOW), "synth", "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cohort")
    synth(out, "--patients", "6", "--seed", str(COHORT_SEED), "--size", "128")
    return out


def read_series(folder: Path) -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    return sorted(datasets, key=lambda ds: int(ds.InstanceNumber))


def test_cli_writes_the_documented_layout(cohort):
    ids = synthetic_patient_ids(6)
    assert sorted(p.name for p in (cohort / "dicom").iterdir()) == ids
    assert all((cohort / "truth" / f"{pid}.npz").is_file() for pid in ids)
    labels = pd.read_csv(cohort / "labels.tsv", sep="\t", dtype={"patient_id": str})
    assert list(labels.columns) == [
        "patient_id",
        "instance_number",
        "sop_instance_uid",
        "calcium",
        "cac_class",
    ]
    patients = pd.read_csv(cohort / "truth" / "patients.tsv", sep="\t")
    for column in (
        "agatston_total",
        "agatston_lad",
        "agatston_lcx",
        "agatston_rca",
        "volume_mm3",
        "risk_category",
        "n_lesions",
    ):
        assert column in patients.columns
    assert patients["patient_id"].tolist() == ids
    assert not list(cohort.rglob("*.part"))  # no half-written file left behind


def test_every_file_reads_back_with_hu_and_geometry_of_the_truth(cohort):
    for pid in synthetic_patient_ids(6):
        truth = np.load(cohort / "truth" / f"{pid}.npz")
        series = read_series(cohort / "dicom" / pid)
        assert len(series) == truth["hu"].shape[0]
        assert 40 <= len(series) <= 56
        for k, ds in enumerate(series):
            assert ds.Modality == "CT"
            assert ds.SOPClassUID == pydicom.uid.CTImageStorage
            assert float(ds.KVP) == 120
            hu = apply_modality_lut(ds.pixel_array, ds)
            np.testing.assert_array_equal(hu, truth["hu"][k])
            assert [float(v) for v in ds.PixelSpacing] == pytest.approx(truth["pixel_spacing_mm"])
            assert float(ds.SliceThickness) == pytest.approx(float(truth["slice_thickness_mm"]))
        assert len({ds.SeriesInstanceUID for ds in series}) == 1
        assert len({ds.SOPInstanceUID for ds in series}) == len(series)
        # Positions step by the slice spacing along the normal of the orientation.
        orientation = np.array(series[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        along = np.array(
            [np.dot(np.array(ds.ImagePositionPatient, float), normal) for ds in series]
        )
        steps = np.diff(along)
        assert np.allclose(np.abs(steps), float(truth["slice_thickness_mm"]), atol=1e-3)
        assert np.all(np.sign(steps) == np.sign(steps[0]))


def test_truth_tables_equal_the_standard_algorithm_on_the_truth_arrays(cohort):
    patients = pd.read_csv(
        cohort / "truth" / "patients.tsv",
        sep="\t",
        index_col="patient_id",
        dtype={"risk_category": str},
    )
    labels = pd.read_csv(cohort / "labels.tsv", sep="\t")
    assert (patients["agatston_total"] > 0).any(), "this seed should give some calcium"
    for pid in synthetic_patient_ids(6):
        truth = np.load(cohort / "truth" / f"{pid}.npz")
        result = agatston_score(
            truth["hu"],
            truth["lesion_labels"] > 0,
            truth["pixel_spacing_mm"],
            float(truth["slice_thickness_mm"]),
            lesion_labels=truth["lesion_labels"],
        )
        row = patients.loc[pid]
        assert row["agatston_total"] == pytest.approx(result.total, abs=1e-3)
        assert row["volume_mm3"] == pytest.approx(result.volume_mm3, abs=1e-3)
        assert row["risk_category"] == result.risk_category
        by_artery = collections.Counter()
        for label, score in result.score_by_label().items():
            by_artery[str(truth["lesion_artery"][label])] += score
        for artery in ("LAD", "LCX", "RCA"):
            assert row[f"agatston_{artery.lower()}"] == pytest.approx(by_artery[artery], abs=1e-3)
        assert row["n_lesions"] == len({lesion.label for lesion in result.lesions})
        # A slice is labelled calcium exactly when a lesion on it scores.
        slice_labels = labels[labels["patient_id"] == pid].sort_values("instance_number")
        expected = (result.score_by_slice(truth["hu"].shape[0]) > 0).astype(int)
        assert slice_labels["calcium"].tolist() == expected.tolist()
        assert set(slice_labels["cac_class"]) == {"high" if result.total >= 20 else "low"}


def test_same_seed_gives_identical_bytes_and_another_seed_another_cohort(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out, seed in ((first, "3"), (second, "3"), (other, "4")):
        synth(out, "--patients", "2", "--seed", seed, "--size", "64")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(first, second, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    a = np.load(first / "truth" / "SYN0001.npz")["hu"]
    c = np.load(other / "truth" / "SYN0001.npz")["hu"]
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_series_are_anonymized_unless_phi_is_asked_for(cohort, tmp_path):
    ds = read_series(cohort / "dicom" / "SYN0002")[0]
    assert str(ds.PatientName) == ds.PatientID == "SYN0002"
    for keyword in ("PatientBirthDate", "StudyDate", "ReferringPhysicianName"):
        assert not str(ds.get(keyword, ""))
    assert "InstitutionName" not in ds and "OtherPatientIDs" not in ds

    synth(tmp_path, "--patients", "2", "--size", "64", "--phi")
    phi = pd.read_csv(tmp_path / "truth" / "phi.tsv", sep="\t", dtype=str)
    ds = read_series(tmp_path / "dicom" / "SYN0001")[0]
    written = phi[phi["patient_id"] == "SYN0001"].set_index("tag")["value"]
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyDate",
        "InstitutionName",
        "ReferringPhysicianName",
        "OtherPatientIDs",
    ):
        assert str(ds.get(keyword)) == written[keyword] != ""
    assert ds.PatientID != "SYN0001"


@pytest.fixture(scope="module")
def full_size_patients():
    """Three patients at the default 512 px, rendered in memory."""
    settings = SynthSettings(seed=COHORT_SEED)
    return [simulate_patient(pid, settings) for pid in synthetic_patient_ids(3)]


def test_anatomy_and_tissue_values_look_like_cac_ct(full_size_patients):
    for patient in full_size_patients:
        vol, acq = patient.volume, patient.acquisition
        assert 0.5 <= acq.pixel_spacing_mm <= 0.8
        heart_per_slice = vol.heart_mask.sum(axis=(1, 2))
        # From above the aortic root to below the apex: some slices hold no heart.
        assert heart_per_slice[0] < heart_per_slice.max() * 0.2
        assert heart_per_slice[-1] == 0 or heart_per_slice[-1] < heart_per_slice.max() * 0.2
        mid = int(np.argmax(heart_per_slice))
        heart_hu = vol.hu[mid][vol.heart_mask[mid]]
        assert 20 <= np.median(heart_hu) <= 70  # blood and myocardium
        assert np.mean(heart_hu < -500) < 0.01  # no lung inside the heart region
        assert np.mean((heart_hu > -150) & (heart_hu < -50)) > 0.02  # epicardial fat
        body = vol.hu[mid] > -500
        lung = (vol.hu[mid] < -700) & (vol.hu[mid] > -950)
        assert lung.sum() > 0.15 * body.sum()
        assert (vol.hu[mid] > 600).sum() > 50  # cortical bone: spine, ribs, sternum
        # The descending aorta is not part of the heart region.
        aorta = patient.anatomy.descending_aorta.p0[0]
        z = vol.slice_z_mm[mid]
        row = round((aorta[1] - acq.origin_y_mm) / acq.pixel_spacing_mm)
        col = round((aorta[0] - acq.origin_x_mm) / acq.pixel_spacing_mm)
        assert not vol.heart_mask[mid, row, col], f"descending aorta in heart mask at z={z}"
        assert 25 <= np.median(vol.hu[mid, row - 3 : row + 4, col - 3 : col + 4]) <= 70  # blood


def test_noise_matches_the_configured_level(full_size_patients):
    for patient in full_size_patients:
        vol, acq = patient.volume, patient.acquisition
        mid = int(np.argmax(vol.heart_mask.sum(axis=(1, 2))))
        interior = vol.heart_mask[mid]
        for _ in range(25):  # well inside the blood pool, away from fat and edges
            interior = (
                interior[1:-1, 1:-1]
                & interior[:-2, 1:-1]
                & interior[2:, 1:-1]
                & interior[1:-1, :-2]
                & interior[1:-1, 2:]
            )
            interior = np.pad(interior, 1)
        blood = vol.hu[mid][interior]
        assert blood.size > 200
        assert np.std(blood) == pytest.approx(acq.noise_sd_hu, rel=0.3)


def test_coronary_lesions_lie_inside_the_heart_region(full_size_patients):
    for patient in full_size_patients:
        lesion = patient.volume.lesion_labels > 0
        if lesion.any():
            assert patient.volume.heart_mask[lesion].mean() >= 0.99


@pytest.mark.parametrize("seed", [2021, 9001])
def test_heart_region_holds_no_bone_or_cartilage_and_lies_behind_the_chest_wall(seed):
    """The pericardium sits behind sternum, costal cartilage and ribs (anterior mediastinal
    fat between): noise-free planes through the heart hold only soft tissue, fat and blood
    in the truth heart region, and none of it lies in the body wall."""
    heart_tissue_max_hu = 100.0  # blood 42, myocardium 48; cartilage 110, bone >= 230
    for pid in synthetic_patient_ids(12):
        patient = simulate_patient(pid, SynthSettings(seed=seed, size=256), slices=[])
        anatomy, acq = patient.anatomy, patient.acquisition
        grid = Grid(acq)
        static = phantom.static_maps(anatomy, grid)
        for z in acq.slice_z_mm():
            plane = phantom.render_plane(anatomy, grid, float(z), static)
            heart = plane.heart_mask
            if not heart.any():
                continue
            assert plane.hu[heart].max() <= heart_tissue_max_hu, f"{pid} z={z:.1f}"
            assert not (heart & ~static.cavity).any(), f"{pid} z={z:.1f}: heart in the chest wall"


def test_radon_noise_model_reconstructs_a_chest(tmp_path):
    settings = SynthSettings(seed=1, size=96, noise_model="radon")
    patient = simulate_patient("SYN0001", settings, slices=[20])
    hu = patient.volume.hu[0]
    heart = patient.volume.heart_mask[0]
    assert -1100 <= np.median(hu[0:3, :]) <= -900  # air in the corners
    assert 0 <= np.median(hu[heart]) <= 90


@pytest.mark.slow
def test_population_has_half_zero_scores_and_every_risk_category():
    """200 patients at 512 px; only the slices a coronary lesion reaches are rendered."""
    settings = SynthSettings(seed=2021)
    categories = collections.Counter()
    for pid in synthetic_patient_ids(200):
        patient = simulate_patient(pid, settings, slices=[])
        patient = simulate_patient(pid, settings, slices=coronary_slices(patient))
        vol, acq = patient.volume, patient.acquisition
        result = agatston_score(
            vol.hu,
            vol.lesion_labels > 0,
            (acq.pixel_spacing_mm, acq.pixel_spacing_mm),
            acq.slice_thickness_mm,
        )
        categories[result.risk_category] += 1
    assert 0.40 <= categories["0"] / 200 <= 0.60, categories
    assert all(categories[c] > 0 for c in RISK_CATEGORIES), categories


def test_phantom_partial_volume_of_a_small_lesion_is_its_volume():
    """Sub-pixel, sub-slice sampling: occupancy integrates to the ellipsoid's volume."""
    acq = Acquisition(
        size=64,
        pixel_spacing_mm=0.7,
        slice_thickness_mm=3.0,
        n_slices=1,
        z_top_mm=0.0,
        origin_x_mm=-22.0,
        origin_y_mm=-22.0,
        noise_sd_hu=0.0,
    )
    grid = Grid(acq)
    shape = Ellipsoid(np.array([0.3, -0.2, 0.4]), np.eye(3), np.array([1.5, 1.0, 1.0]))
    _, occupancy = phantom.calcification_occupancy(grid, shape, 0.0, 3.0)
    measured = occupancy.sum() * 0.7 * 0.7 * 3.0
    assert measured == pytest.approx(4 / 3 * np.pi * 1.5, rel=0.1)


def _off_the_wall_mm(point: np.ndarray, tube) -> float:
    """How far `point` lies from the surface of the nearest segment of a tube of capsules."""
    axis = tube.p1 - tube.p0
    t = np.clip(((point - tube.p0) * axis).sum(1) / (axis * axis).sum(1), 0, 1)
    to_axis = np.linalg.norm(tube.p0 + t[:, None] * axis - point, axis=1)
    return float(np.abs(to_axis - tube.radius).min())


def test_coronary_ostia_sit_in_the_sinuses_and_aortic_plaques_in_the_aortic_wall():
    """Ostia 10-19 mm above the valve plane, below the sinotubular junction; the left main
    runs slightly down from its ostium to the bifurcation; aortic wall plaques are centred
    on the wall (the sinuses' wider one at the root)."""
    for index in range(100):
        anatomy = sample_anatomy(np.random.default_rng([COHORT_SEED, index, 0]))
        valve = anatomy.aortic_valve
        lad, rca = anatomy.coronary_lumen["LAD"], anatomy.coronary_lumen["RCA"]
        for ostium in (lad.p0[0], rca.p0[0]):
            assert 10.0 <= ostium[2] - valve[2] <= 19.0, index
            assert ostium[2] < anatomy.aortic_root_top_z, index
        left_main_end = lad.p1[3]  # the left main is the first four capsules of the LAD
        assert left_main_end[2] <= lad.p0[0][2] - 3.9, index
        assert np.linalg.norm(left_main_end - lad.p0[0]) >= 1.5, index
        aorta = (anatomy.ascending_aorta, anatomy.descending_aorta)
        for plaque in anatomy.calcifications:
            if plaque.kind == "aortic_wall":
                assert min(_off_the_wall_mm(plaque.shape.center, tube) for tube in aorta) < 1e-6
