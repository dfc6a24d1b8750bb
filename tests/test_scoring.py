"""Classical and hybrid Agatston scoring of a patient, on constructed volumes and masks, and
the classical score's rules on synthetic DICOM studies."""

import numpy as np
import pytest
import yaml
from conftest import make_volume

from cacflow.dicom.ingest import read_study, volume_of
from cacflow.imaging.datasets import DatasetSettings, build_patient_datasets
from cacflow.pipeline import StudySettings, segment_volume
from cacflow.scoring.agatston import agatston_score
from cacflow.scoring.arteries import ARTERY_COLUMNS
from cacflow.scoring.reference import read_lesion_map
from cacflow.scoring.scoring import (
    LESION_COLUMNS,
    MERGED_COLUMNS,
    PATIENT_COLUMNS,
    STANDARD,
    ScoringError,
    ScoringSettings,
    candidate_lesions,
    classical_score,
    filter_candidates,
    hybrid_scores,
    merge_scores,
    tissue_noise,
)
from cacflow.synthetic.synth import SynthSettings, synth_patient
from cacflow.tables import read_tsv, write_tsv

SPACING = (0.5, 0.5)  # 0.25 mm^2 per pixel
INSTANCES = [11, 12, 13]  # DICOM instance numbers of the three slices


def patient(*blocks, shape=(3, 60, 60)):
    """Soft tissue (40 HU) with calcium blocks (slice, rows, cols, hu), and a heart mask over
    rows and columns 15..44 of every slice: a 30 px square box, tiles of 10 px."""
    hu = np.full(shape, 40, dtype=np.int16)
    for k, rows, cols, value in blocks:
        hu[k, rows, cols] = value
    mask = np.zeros(shape, dtype=bool)
    mask[:, 15:45, 15:45] = True
    return hu, mask


def test_classical_scores_calcium_inside_the_heart_mask():
    # 4x4 px = 4 mm^2 at 250 HU (weight 2) on slice 0; 2x4 px = 2 mm^2 at 450 HU (weight 4)
    # on slice 2: 4 * 2 + 2 * 4 = 16 at 3 mm slices.
    hu, mask = patient(
        (0, slice(20, 24), slice(20, 24), 250), (2, slice(30, 32), slice(30, 34), 450)
    )
    score = classical_score("P1", make_volume(hu, INSTANCES, SPACING, 3.0), mask)
    assert {k: v for k, v in score.row.items() if k not in ARTERY_COLUMNS} == {
        "patient_id": "P1",
        "method": "classical",
        "agatston": 16.0,
        "volume_mm3": 18.0,  # (4 + 2) mm^2 x 3 mm
        "risk_category": "11-100",
        "n_lesions": 2,
        "n_vessels": sum(score.row[c] > 0 for c in ARTERY_COLUMNS),
    }
    assert sum(score.row[c] for c in ARTERY_COLUMNS) == pytest.approx(16.0)
    assert [set(r) for r in score.lesions] == [set(LESION_COLUMNS)] * 2
    first, second = score.lesions
    assert (first["slice"], first["slice_index"]) == (11, 0)
    assert (second["slice"], second["slice_index"]) == (13, 2)
    assert (first["area_mm2"], first["peak_hu"], first["weight"], first["score"]) == (
        4.0,
        250.0,
        2,
        8.0,
    )
    assert (first["centroid_row"], first["centroid_col"]) == (21.5, 21.5)
    assert second["volume_mm3"] == 6.0


def test_slice_spacing_normalises_the_score():
    hu, mask = patient((1, slice(20, 24), slice(20, 24), 250))
    score = classical_score("P1", make_volume(hu, INSTANCES, SPACING, 1.5), mask)
    assert score.row["agatston"] == pytest.approx(4.0)  # 8 x 1.5 / 3


def test_calcium_outside_the_heart_mask_is_not_scored():
    # A bone-like block at rows 50..53 is outside the mask; only the lesion inside counts.
    hu, mask = patient(
        (1, slice(50, 54), slice(20, 30), 900), (1, slice(20, 24), slice(20, 24), 150)
    )
    score = classical_score("P1", make_volume(hu, INSTANCES, SPACING, 3.0), mask)
    assert score.row["agatston"] == pytest.approx(4.0)
    assert score.row["n_lesions"] == 1
    # A block straddling the mask edge counts with its inside part only (2 of 4 columns).
    hu, mask = patient((1, slice(20, 24), slice(43, 47), 450))
    score = classical_score("P1", make_volume(hu, INSTANCES, SPACING, 3.0), mask)
    assert score.row["agatston"] == pytest.approx(2.0 * 4)


def test_no_calcium_scores_zero():
    hu, mask = patient()
    score = classical_score("P1", make_volume(hu, INSTANCES, SPACING, 3.0), mask)
    assert score.row["agatston"] == 0 and score.row["risk_category"] == "0"
    assert score.lesions == []


def test_lesion_tiles_match_the_cropped_manifest(tmp_path):
    # Tiles of the 30 px box are rows/cols 15-24, 25-34, 35-44. Lesion A lies in tile 3 (top
    # row, right column); lesion B straddles tiles 5 and 6 (middle row); C fills tile 7.
    hu, mask = patient(
        (0, slice(16, 20), slice(38, 42), 300),
        (1, slice(27, 30), slice(32, 37), 500),
        (2, slice(36, 42), slice(16, 22), 200),
    )
    volume = make_volume(hu, INSTANCES, SPACING, 3.0)
    score = classical_score("P1", volume, mask, grid=3)
    assert [r["tiles"] for r in score.lesions] == ["3", "5,6", "7"]

    # The datasets call exactly the tiles that show a lesion calcium.
    result = build_patient_datasets(
        tmp_path, "P1", volume, mask, None, hu >= 130, DatasetSettings()
    )
    calcium_tiles = {
        (row["slice"], row["tile"]) for row in result.rows["cropped"] if row["label"] == "calcium"
    }
    from_lesions = {(r["slice"], int(t)) for r in score.lesions for t in r["tiles"].split(",")}
    assert calcium_tiles == from_lesions == {(11, 3), (12, 5), (12, 6), (13, 7)}


def test_instance_numbers_must_fit_the_volume():
    hu, mask = patient()
    with pytest.raises(ScoringError, match="P1: 2 instance numbers for 3 slices"):
        classical_score("P1", make_volume(hu, [1, 2], SPACING, 3.0), mask)
    volume = make_volume(hu, INSTANCES, SPACING, 3.0)
    with pytest.raises(ScoringError, match="P1: heart mask shape"):
        classical_score("P1", volume, mask[:, :10])
    with pytest.raises(ScoringError, match="P1: the segmentation's slices"):
        classical_score("P1", volume, mask, mask_instance_numbers=[1, 2, 3])


def test_score_with_the_slices_of_a_saved_mask():
    hu, mask = patient((0, slice(20, 24), slice(20, 24), 250))
    volume = make_volume(hu, INSTANCES, SPACING, 3.0)
    score = classical_score("P1", volume, mask, mask_instance_numbers=INSTANCES)
    assert score.row["agatston"] == pytest.approx(8.0)
    assert score.lesions[0]["slice"] == 11


def lesion_rows(tmp_path):
    """Lesions of P1 (tiles 3, then 5,6; 8 + 12 = 20 points) and none of P2, read back from
    their tables as the workflow does (strings)."""
    hu, mask = patient(
        (0, slice(16, 20), slice(38, 42), 250), (1, slice(27, 30), slice(32, 36), 500)
    )
    p1 = classical_score("P1", make_volume(hu, INSTANCES, SPACING, 3.0), mask)
    hu2, mask2 = patient()
    p2 = classical_score("P2", make_volume(hu2, INSTANCES, SPACING, 3.0), mask2)
    path = tmp_path / "lesions.tsv"
    write_tsv(path, p1.lesions + p2.lesions, LESION_COLUMNS)
    assert [float(r["score"]) for r in p1.lesions] == [8.0, 12.0]
    return read_tsv(path)


def test_hybrid_keeps_lesions_whose_tiles_are_called_calcium(tmp_path):
    lesions = lesion_rows(tmp_path)
    predictions = [
        {"patient_id": "P1", "slice": "11", "tile": "3", "probability": "0.9"},
        {"patient_id": "P1", "slice": "12", "tile": "5", "probability": "0.2"},
        {"patient_id": "P1", "slice": "12", "tile": "6", "probability": "0.49"},
        {"patient_id": "P2", "slice": "11", "tile": "1", "probability": "0.99"},
    ]
    rows = hybrid_scores(lesions, predictions, "hybrid:cropped/resnet50")
    none = dict.fromkeys(ARTERY_COLUMNS, 0.0)
    kept_artery = f"agatston_{lesions[0]['artery'].lower()}"  # only the first lesion is kept
    assert rows == [
        {
            "patient_id": "P1",
            "method": "hybrid:cropped/resnet50",
            "agatston": 8.0,
            "volume_mm3": 12.0,
            "risk_category": "1-10",
            "n_lesions": 1,
            **none,
            kept_artery: 8.0,
            "n_vessels": 1,
        },
        {
            "patient_id": "P2",
            "method": "hybrid:cropped/resnet50",
            "agatston": 0.0,
            "volume_mm3": 0.0,
            "risk_category": "0",
            "n_lesions": 0,
            **none,
            "n_vessels": 0,
        },
    ]
    # A probability of exactly the threshold keeps; a lower threshold keeps both lesions.
    predictions[2]["probability"] = "0.5"
    assert hybrid_scores(lesions, predictions, "h")[0]["agatston"] == pytest.approx(20.0)
    predictions[2]["probability"] = "0.49"
    assert hybrid_scores(lesions, predictions, "h", threshold=0.4)[0]["n_lesions"] == 2


def test_hybrid_on_whole_slice_images(tmp_path):
    lesions = lesion_rows(tmp_path)
    # Whole-slice datasets: tile 0 (manifests) or empty; slice 12 called calcium only.
    predictions = [
        {"patient_id": "P1", "slice": 11, "tile": 0, "probability": 0.1},
        {"patient_id": "P1", "slice": 12, "tile": "", "probability": 0.8},
    ]
    (row,) = hybrid_scores(lesions, predictions, "hybrid:original/vgg16")
    assert (row["patient_id"], row["agatston"], row["n_lesions"]) == ("P1", 12.0, 1)
    # Only patients with predictions get a row.
    assert hybrid_scores(lesions, [], "h") == []


def test_merge_adds_truth_and_other_methods(tmp_path):
    classical = tmp_path / "classical.tsv"
    write_tsv(
        classical,
        [
            {"patient_id": "P1", "method": "classical", "agatston": 16.0, "volume_mm3": 18.0,
             "risk_category": "11-100", "n_lesions": 2},
        ],
        PATIENT_COLUMNS,
    )  # fmt: skip
    refused = tmp_path / "refused.tsv"
    write_tsv(refused, [], PATIENT_COLUMNS)
    hybrid = tmp_path / "hybrid.tsv"
    write_tsv(
        hybrid,
        [
            {"patient_id": "P1", "method": "hybrid:x", "agatston": 8.0, "volume_mm3": 12.0,
             "risk_category": "1-10", "n_lesions": 1},
        ],
        PATIENT_COLUMNS,
    )  # fmt: skip
    truth = [
        {"patient_id": "P1", "agatston_total": "9.5", "volume_mm3": "11", "risk_category": "1-10"}
    ]
    rows = merge_scores([classical, refused, hybrid], truth)
    assert [set(r) for r in rows] == [set(MERGED_COLUMNS)] * 2
    assert [(r["method"], r["agatston"], r["truth_agatston"]) for r in rows] == [
        ("classical", "16.0", "9.5"),
        ("hybrid:x", "8.0", "9.5"),
    ]
    assert rows[0]["truth_risk_category"] == "1-10"
    # Own data: no truth, empty truth columns.
    assert merge_scores([classical])[0]["truth_agatston"] == ""
    write_tsv(refused, [{"patient_id": "P9"}], ["patient_id"])
    with pytest.raises(ScoringError, match=r"refused\.tsv: score table lacks columns"):
        merge_scores([refused])


# The classical score's rules ----------------------------------------------------------
def test_standard_settings_are_the_plain_algorithm_inside_the_mask():
    """With every rule off, the classical score is `agatston_score` inside the mask, whatever
    the rules would have dropped (a 2 px lesion, a faint blob on noise, bone, a deep lesion)."""
    rng = np.random.default_rng(7)
    hu = rng.normal(40, 25, size=(11, 100, 100)).round().astype(np.int16)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[:, 10:90, 10:90] = True
    hu[5, 48:52, 48:52] = 500  # deep in the mask
    hu[2, 12:14, 20] = 300  # 2 px (what min_lesion_pixels=3 drops)
    hu[3, 20:26, 20:26] = 150  # faint
    hu[:, 0:20, 60:80] = 800  # bone reaching out of the mask
    spacing = (0.8, 0.8)
    volume = make_volume(hu, list(range(11)), spacing, 3.0)
    standard = classical_score("P1", volume, mask, settings=STANDARD)
    plain = agatston_score(hu, mask, spacing, 3.0)
    assert standard.row["agatston"] == round(plain.total, 3)
    assert standard.row["n_lesions"] == len(plain.lesions) == len(standard.lesions)
    every_rule = ScoringSettings(min_lesion_pixels=3)
    filtered = classical_score("P1", volume, mask, settings=every_rule)
    assert filtered.row["agatston"] < standard.row["agatston"]


@pytest.mark.parametrize(
    "settings", [ScoringSettings(), ScoringSettings(min_lesion_pixels=3), STANDARD]
)
def test_hand_computed_score_is_kept_by_the_rules(settings):
    # The first test's two lesions: nothing for a rule to drop in a noise-free volume.
    hu, mask = patient(
        (0, slice(20, 24), slice(20, 24), 250), (2, slice(30, 32), slice(30, 34), 450)
    )
    score = classical_score("P1", make_volume(hu, INSTANCES, SPACING, 3.0), mask, settings=settings)
    assert (score.row["agatston"], score.row["n_lesions"]) == (16.0, 2)


def test_too_few_pixels_are_noise():
    # At 0.8 mm pixels 2 px are 1.28 mm^2 (the standard keeps them); 3x3 px = 5.76 mm^2 is a
    # plaque. Blood at 40 HU without noise, so the noise rule is idle.
    hu, mask = patient(
        (1, slice(20, 21), slice(20, 22), 300), (1, slice(30, 33), slice(30, 33), 300)
    )
    spacing = (0.8, 0.8)
    plaque = 9 * 0.64 * 3  # area x weight 3
    three = ScoringSettings(min_lesion_pixels=3)
    volume = make_volume(hu, INSTANCES, spacing, 3.0)
    score = classical_score("P1", volume, mask, settings=three)
    assert score.row["agatston"] == pytest.approx(plaque)
    assert score.row["n_lesions"] == 1
    # The default leaves the pixel count off: both lesions, as the standard algorithm.
    for settings in (ScoringSettings(), STANDARD):
        score = classical_score("P1", volume, mask, settings=settings)
        assert score.row["agatston"] == pytest.approx(plaque + 2 * 0.64 * 3)
    # At 1.2 mm pixels one pixel is 1.44 mm^2: a lone pixel is dropped from 2 pixels on.
    hu, mask = patient((1, slice(20, 21), slice(20, 21), 300))
    two = ScoringSettings(min_lesion_pixels=2)
    volume = make_volume(hu, INSTANCES, (1.2, 1.2), 3.0)
    assert classical_score("P1", volume, mask).row["n_lesions"] == 1
    score = classical_score("P1", volume, mask, settings=two)
    assert score.row["n_lesions"] == 0


def noisy_patient(sd_hu: float = 25.0):
    """Blood (40 HU) with white noise of `sd_hu` in a 40 mm heart mask, 0.5 mm pixels."""
    rng = np.random.default_rng(2021)
    hu = rng.normal(40, sd_hu, size=(3, 100, 100)).round().astype(np.int16)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[:, 10:90, 10:90] = True
    return hu, mask


def test_tissue_noise_measures_blood_level_and_noise():
    hu, mask = noisy_patient(25.0)
    hu[1, 40:44, 40:44] = 600  # calcium does not count
    level, sd = tissue_noise(hu, mask, SPACING)
    assert level == pytest.approx(40, abs=1)
    assert sd == pytest.approx(25, rel=0.05)
    assert np.isnan(tissue_noise(hu, np.zeros_like(mask), SPACING)[1])


def test_faint_blob_on_a_noisy_scan_is_noise():
    # Noise SD 25 HU: a lesion must peak above 40 + 5 x 25 = 165 HU. A 2x2 mm blob at
    # 150 HU is dropped, a plaque of the same size at 400 HU is kept.
    hu, mask = noisy_patient(25.0)
    hu[0, 30:34, 30:34] = 150
    hu[2, 60:64, 60:64] = 400
    filtered = filter_candidates(hu, mask, SPACING, 3.0)
    assert filtered.noise_sd_hu == pytest.approx(25, rel=0.05)
    assert filtered.excluded["noise"][0, 30:34, 30:34].all()
    assert not filtered.excluded["noise"][2].any()
    volume = make_volume(hu, INSTANCES, SPACING, 3.0)
    score = classical_score("P1", volume, mask)
    assert score.row["agatston"] == pytest.approx(4.0 * 4)
    assert [lesion["peak_hu"] for lesion in score.lesions] == [400.0]
    off = ScoringSettings(noise_peak_sd=0.0)
    score = classical_score("P1", volume, mask, settings=off)
    assert score.row["agatston"] == pytest.approx(4.0 * 4 + 4.0 * 1)


def deep_patient():
    """A heart mask 40 mm across (0.5 mm pixels) over 11 slices of 3 mm (33 mm)."""
    hu = np.full((11, 100, 100), 40, dtype=np.int16)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[:, 10:90, 10:90] = True
    return hu, mask


def test_calcium_deep_in_the_heart_is_not_coronary():
    # Valve-like calcium at the heart's core (18 mm from the surface, 3-D: 6 slices of 3 mm
    # to the scan's end, 20 mm in-plane) is dropped; a plaque 2 mm under the surface of the
    # mask is kept, on the same slice.
    hu, mask = deep_patient()
    hu[5, 48:52, 48:52] = 600  # aortic valve / mitral annulus position
    hu[5, 14:18, 48:52] = 600  # epicardial
    filtered = filter_candidates(hu, mask, SPACING, 3.0)
    assert filtered.excluded["deep"][5, 48:52, 48:52].all()
    assert filtered.excluded["deep"].sum() == 16
    volume = make_volume(hu, list(range(11)), SPACING, 3.0)
    score = classical_score("P1", volume, mask)
    assert score.row["agatston"] == pytest.approx(4.0 * 4)
    assert score.lesions[0]["centroid_row"] == 15.5
    off = ScoringSettings(max_depth_mm=0.0)
    score = classical_score("P1", volume, mask, settings=off)
    assert score.row["agatston"] == pytest.approx(2 * 4.0 * 4)
    # A calcification that reaches the surface zone counts whole, though its centre is deep.
    hu, mask = deep_patient()
    hu[5, 25:60, 48:52] = 600  # from 7.5 mm to 25 mm deep
    volume = make_volume(hu, list(range(11)), SPACING, 3.0)
    assert classical_score("P1", volume, mask).row["n_lesions"] == 1


def test_candidates_carry_the_rule_that_rejected_them(tmp_path):
    from PIL import Image

    from cacflow.reporting.lesion_gallery import draw_lesion_gallery

    hu, mask = deep_patient()
    hu[5, 48:52, 48:52] = 600  # deep: rejected
    hu[5, 14:18, 48:52] = 600  # epicardial: kept
    hu[7, 14, 30] = 600  # one pixel, 0.25 mm^2: no Agatston lesion, no candidate
    filtered = filter_candidates(hu, mask, SPACING, 3.0)
    candidates = candidate_lesions(hu, mask, filtered, SPACING, 3.0)
    by_row = {c.lesion.centroid_row: c for c in candidates}
    assert sorted(by_row) == [15.5, 49.5]
    assert by_row[15.5].outcome == "kept" and by_row[49.5].outcome == "deep"
    assert all(c.lesion.slice_index == 5 for c in candidates)
    assert [c.lesion.score for c in candidates] == pytest.approx([16.0, 16.0])
    # The kept ones are the classical score's lesions.
    kept = sum(c.lesion.score for c in candidates if c.outcome == "kept")
    volume = make_volume(hu, list(range(11)), SPACING, 3.0)
    score = classical_score("P1", volume, mask)
    assert kept == score.row["agatston"]
    # The classical score hands over the same candidates, so nothing filters twice.
    assert score.candidates == candidates

    out = tmp_path / "gallery.png"
    draw_lesion_gallery(hu, mask, candidates, SPACING, list(range(11)), out, "P1")
    with Image.open(out) as png:
        assert png.width >= 600 and png.height >= 150
        pixels = np.asarray(png.convert("RGB")).reshape(-1, 3).astype(int)
    # Both verdicts are drawn: green (kept) and red (rejected) outlines and titles.
    assert ((pixels[:, 1] > 100) & (pixels[:, 0] < 80) & (pixels[:, 2] < 80)).any()
    assert ((pixels[:, 0] > 180) & (pixels[:, 1] < 80) & (pixels[:, 2] < 80)).any()


def test_calcium_on_bone_reaching_out_of_the_mask_is_not_coronary():
    # A vertebra-like block: 3 slices x 5 x 5 mm outside the mask (225 mm^3 at 0.5 mm x
    # 3 mm) and 2 x 5 mm inside it. A plaque straddling the mask edge (4x4 px, half
    # outside, 6 mm^3 outside) is kept with its inside part, as the standard algorithm does.
    hu, mask = patient(
        (slice(0, 3), slice(37, 55), slice(20, 30), 700),
        (1, slice(20, 24), slice(43, 47), 450),
    )
    filtered = filter_candidates(hu, mask, SPACING, 3.0)
    assert filtered.excluded["bone"].sum() == 3 * 8 * 10
    volume = make_volume(hu, INSTANCES, SPACING, 3.0)
    score = classical_score("P1", volume, mask)
    assert score.row["agatston"] == pytest.approx(2.0 * 4)
    standard = classical_score("P1", volume, mask, settings=STANDARD)
    assert standard.row["agatston"] == pytest.approx(2.0 * 4 + 3 * 20.0 * 4)


def aorta_patient(tube_slices=range(8), embed="", spacing=SPACING, n_slices=8):
    """Mediastinal fat (-100 HU; 100 x 100 mm, `n_slices` slices of 3 mm) with a vertical
    tube of blood (40 HU, 15 mm radius, centre 35 mm down and 50 mm across) on `tube_slices`
    and a heart (40 HU, 55-95 mm down) from slice 5 on. On slice 2, `embed` "all" puts the heart's
    tissue all round the tube (the root among the chambers), "half" on its right half. The
    heart mask holds the tube and the heart. Returns hu, mask and each pixel's (distance
    from the tube's axis, angle in degrees: 0 right, 90 down) in mm."""
    rows, cols = (round(100 / s) for s in spacing)
    y, x = np.mgrid[:rows, :cols] * np.array(spacing)[:, None, None]
    radius, angle = np.hypot(y - 35, x - 50), np.degrees(np.arctan2(y - 35, x - 50))
    hu = np.full((n_slices, rows, cols), -100, dtype=np.int16)
    mask = np.zeros(hu.shape, dtype=bool)
    heart = (y >= 55) & (y < 95) & (x >= 10) & (x < 90)
    around = {"all": (y >= 15) & (y < 95) & (x >= 10) & (x < 90), "half": (x >= 50) & (y < 95)}
    for k in range(n_slices):
        tissue = heart if k >= 5 else np.zeros_like(heart)
        if k == 2 and embed:
            tissue = tissue | around[embed]
        if k in tube_slices:
            tissue = tissue | (radius <= 15)
        hu[k][tissue] = 40
        mask[k] = tissue
    return hu, mask, (radius, angle)


def wall_calcium(hu, polar, k, angle_deg, arc_deg=0.0):
    """600 HU in the tube's wall on slice `k` (13.5-15 mm from the axis): a 2 mm plaque at
    `angle_deg`, or an arc of `arc_deg` round it. Returns the calcium's pixels."""
    radius, angle = polar
    turn = (angle - angle_deg + 180) % 360 - 180
    if arc_deg:
        where = (radius >= 13.5) & (radius <= 15) & (np.abs(turn) <= arc_deg / 2)
    else:
        point = (14 * np.sin(np.radians(angle_deg)), 14 * np.cos(np.radians(angle_deg)))
        where = (
            np.hypot(
                radius * np.sin(np.radians(angle)) - point[0],
                radius * np.cos(np.radians(angle)) - point[1],
            )
            <= 1.0
        )
    hu[k][where] = 600
    calcium = np.zeros(hu.shape, dtype=bool)
    calcium[k] = where
    return calcium


def aortic(hu, mask, spacing=SPACING, settings=None):
    """The pixels the aorta rule drops (3 mm slices)."""
    settings = settings or ScoringSettings()
    return filter_candidates(hu, mask, spacing, 3.0, settings).excluded["aorta"]


def test_calcium_on_the_wall_of_the_aorta_is_not_coronary():
    # A plaque on the tube's wall, 3 slices below the scan's top where fat surrounds the
    # tube: aortic wall. Scored without the rule, dropped with it.
    hu, mask, polar = aorta_patient()
    plaque = wall_calcium(hu, polar, 2, 180)
    assert np.array_equal(aortic(hu, mask), plaque)
    slices = list(range(8))
    off = ScoringSettings(aorta_fat_share=0.0)
    expected = agatston_score(hu, plaque, SPACING, 3.0).total
    assert expected > 10
    volume = make_volume(hu, slices, SPACING, 3.0)
    assert classical_score("P1", volume, mask).row["agatston"] == 0
    without = classical_score("P1", volume, mask, settings=off)
    assert without.row["agatston"] == pytest.approx(expected)
    # The same plaque on a tube that ends below the scan's top (as a coronary artery does)
    # is kept, and so is one where the heart surrounds the tube (the sinuses, where the
    # coronary ostia are), one on the scan's first slice, and one on the heart's surface.
    hu, mask, polar = aorta_patient(tube_slices=range(1, 8))
    wall_calcium(hu, polar, 2, 180)
    assert not aortic(hu, mask).any()
    hu, mask, polar = aorta_patient(embed="all")
    wall_calcium(hu, polar, 2, 180)
    assert not aortic(hu, mask).any()
    hu, mask, polar = aorta_patient()
    wall_calcium(hu, polar, 0, 180)
    hu[6, 110:114, 60:64] = 600  # heart surface, 55 mm down
    assert not aortic(hu, mask).any()


def test_calcium_high_on_an_embedded_aorta_is_aortic_but_not_at_the_ostia():
    # Tissue on the tube's right half on the plaque's slice (slice 2): fat meets about half
    # of its edge, too little for the first test. The tube runs on for 13 slices (39 mm)
    # below: the plaque lies more than 30 mm above where the tube ends, above any coronary
    # ostium, and is dropped.
    hu, mask, polar = aorta_patient(tube_slices=range(16), embed="half", n_slices=16)
    plaque = wall_calcium(hu, polar, 2, 180)
    assert np.array_equal(aortic(hu, mask), plaque)
    # The tube ending 5 slices (15 mm) below the plaque, as the aortic root ends at the valve
    # with the ostia in its sinuses: kept, and so is the plaque when the scan ends less than
    # 30 mm below it.
    hu, mask, polar = aorta_patient(tube_slices=range(8), embed="half", n_slices=16)
    wall_calcium(hu, polar, 2, 180)
    assert not aortic(hu, mask).any()
    hu, mask, polar = aorta_patient(embed="half", n_slices=8)
    wall_calcium(hu, polar, 2, 180)
    assert not aortic(hu, mask).any()
    # At the limit: the tube running on 10 slices (30 mm) below the plaque, or 9 (27 mm).
    for last, dropped in ((12, True), (11, False)):
        hu, mask, polar = aorta_patient(tube_slices=range(last + 1), embed="half", n_slices=16)
        wall_calcium(hu, polar, 2, 180)
        assert aortic(hu, mask).any() == dropped, last
    # A tube that runs on below the plaque but not up to the scan's top is no aorta.
    hu, mask, polar = aorta_patient(tube_slices=range(1, 16), embed="half", n_slices=16)
    wall_calcium(hu, polar, 2, 180)
    assert not aortic(hu, mask).any()


def test_aorta_rule_follows_its_setting_pixel_geometry_and_arcs():
    # Tissue on the tube's right half: fat meets about half of its edge there. The plaque
    # on the left is kept at the default share (0.6) and dropped at 0.4.
    hu, mask, polar = aorta_patient(embed="half")
    plaque = wall_calcium(hu, polar, 2, 180)
    assert not aortic(hu, mask).any()
    assert np.array_equal(aortic(hu, mask, settings=ScoringSettings(aorta_fat_share=0.4)), plaque)
    # Rectangular pixels (0.4 mm rows, 0.8 mm columns), the tube round in mm: a plaque at
    # the top of the tube and one at its bottom are both on the wall.
    spacing = (0.4, 0.8)
    hu, mask, polar = aorta_patient(spacing=spacing)
    plaques = wall_calcium(hu, polar, 2, -90) | wall_calcium(hu, polar, 3, 90)
    assert np.array_equal(aortic(hu, mask, spacing), plaques)
    # A half ring of calcium along the wall: its centroid lies 9 mm from the axis, 6 mm
    # inside the wall, its outermost pixels on the wall.
    hu, mask, polar = aorta_patient()
    arc = wall_calcium(hu, polar, 2, 0, arc_deg=180)
    assert np.array_equal(aortic(hu, mask), arc)


def test_settings_from_config(repo_root):
    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    assert ScoringSettings.from_config(config["agatston"]["classical"]) == ScoringSettings()
    assert ScoringSettings.from_config({}) == ScoringSettings()
    off = {
        "bone_outside_mm3": 0,
        "max_depth_mm": 0,
        "noise_peak_sd": 0,
        "aorta_fat_share": 0,
        "min_lesion_pixels": 0,
    }
    assert ScoringSettings.from_config(off) == STANDARD
    with pytest.raises(ValueError, match=r"agatston\.classical: unknown settings \['depth_mm'\]"):
        ScoringSettings.from_config({"depth_mm": 10})


@pytest.fixture(scope="module")
def synthetic_cohort(tmp_path_factory):
    """Two patients of the default cohort (seed 2021, 512 px, 20 HU noise): SYN0004, truth
    14.2 (11-100) with aortic valve, aortic wall and mitral annulus calcium; SYN0028, no
    coronary calcium, a vertebra at the mask's edge."""
    root = tmp_path_factory.mktemp("scoring_cohort")
    truth = {pid: synth_patient(root, pid, SynthSettings()) for pid in ("SYN0004", "SYN0028")}
    return root, truth


def score_both(root, pid):
    report = read_study(root / "dicom" / pid, pid)
    volume = volume_of(report.ct)
    mask = segment_volume(volume, StudySettings().segmentation)
    filtered = filter_candidates(
        volume.hu, mask, volume.pixel_spacing_mm, volume.slice_spacing_mm, ScoringSettings()
    )
    excluded = {
        rule: agatston_score(
            volume.hu, where, volume.pixel_spacing_mm, volume.slice_spacing_mm
        ).total
        for rule, where in filtered.excluded.items()
    }
    return (
        classical_score(pid, volume, mask),
        classical_score(pid, volume, mask, settings=STANDARD),
        excluded,
    )


@pytest.mark.slow
def test_rules_on_a_synthetic_study_with_valve_calcium(synthetic_cohort):
    root, truth = synthetic_cohort
    score, standard, excluded = score_both(root, "SYN0004")
    true_score = float(truth["SYN0004"]["agatston_total"])
    assert truth["SYN0004"]["risk_category"] == "11-100"
    assert score.row["agatston"] == pytest.approx(true_score, rel=0.05)
    assert score.row["risk_category"] == "11-100"
    # The standard algorithm counts the valve and annulus calcium: 101-400.
    assert standard.row["agatston"] > 10 * true_score
    assert excluded["deep"] > 200 and excluded["bone"] == 0
    assert standard.row["agatston"] == pytest.approx(
        score.row["agatston"] + sum(excluded.values()), abs=0.01
    )


@pytest.mark.slow
def test_rules_on_a_synthetic_study_without_coronary_calcium(synthetic_cohort):
    root, truth = synthetic_cohort
    score, standard, excluded = score_both(root, "SYN0028")
    assert float(truth["SYN0028"]["agatston_total"]) == 0
    assert (score.row["agatston"], score.row["risk_category"], score.lesions) == (0, "0", [])
    assert standard.row["risk_category"] != "0"
    assert excluded["bone"] > 10 and excluded["noise"] > 0


@pytest.mark.slow
def test_aorta_rule_on_a_synthetic_study_with_aortic_wall_calcium(tmp_path):
    # Seed 5001's SYN0017 (the cohort the rule was designed on): plaques on the ascending
    # aorta's wall inside the heart mask that the other rules keep.
    truth = synth_patient(tmp_path, "SYN0017", SynthSettings(seed=5001))
    volume = volume_of(read_study(tmp_path / "dicom" / "SYN0017", "SYN0017").ct)
    mask = segment_volume(volume, StudySettings().segmentation)
    geometry = (volume.pixel_spacing_mm, volume.slice_spacing_mm)
    filtered = filter_candidates(volume.hu, mask, *geometry, ScoringSettings())
    removed = agatston_score(volume.hu, filtered.excluded["aorta"], *geometry).total
    truth_map = read_lesion_map(tmp_path / "truth" / "SYN0017.npz", volume.instance_numbers)
    coronary = truth_map.coronary_mask()
    assert "aortic_wall" in truth["noncoronary_calcifications"]
    assert removed > 100
    assert not (filtered.excluded["aorta"] & coronary).any()
    off = ScoringSettings(aorta_fat_share=0.0)
    without = classical_score("SYN0017", volume, mask, settings=off)
    score = classical_score("SYN0017", volume, mask)
    assert without.row["agatston"] == pytest.approx(score.row["agatston"] + removed, abs=0.01)
    truth_score = truth["agatston_total"]
    assert abs(score.row["agatston"] - truth_score) < abs(without.row["agatston"] - truth_score)
