"""Classical and hybrid Agatston scoring of a patient, on constructed volumes and masks."""

import numpy as np
import pytest

from cacflow.datasets import DatasetSettings, build_patient_datasets
from cacflow.ingest import Volume
from cacflow.scoring import (
    LESION_COLUMNS,
    MERGED_COLUMNS,
    PATIENT_COLUMNS,
    ScoringError,
    classical_score,
    hybrid_scores,
    merge_scores,
    score_volume,
)
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
    score = classical_score("P1", hu, mask, INSTANCES, SPACING, 3.0)
    assert score.row == {
        "patient_id": "P1",
        "method": "classical",
        "agatston": 16.0,
        "volume_mm3": 18.0,  # (4 + 2) mm^2 x 3 mm
        "risk_category": "11-100",
        "n_lesions": 2,
    }
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
    score = classical_score("P1", hu, mask, INSTANCES, SPACING, 1.5)
    assert score.row["agatston"] == pytest.approx(4.0)  # 8 x 1.5 / 3


def test_calcium_outside_the_heart_mask_is_not_scored():
    # A bone-like block at rows 50..53 is outside the mask; only the lesion inside counts.
    hu, mask = patient(
        (1, slice(50, 54), slice(20, 30), 900), (1, slice(20, 24), slice(20, 24), 150)
    )
    score = classical_score("P1", hu, mask, INSTANCES, SPACING, 3.0)
    assert score.row["agatston"] == pytest.approx(4.0)
    assert score.row["n_lesions"] == 1
    # A block straddling the mask edge counts with its inside part only (2 of 4 columns).
    hu, mask = patient((1, slice(20, 24), slice(43, 47), 450))
    score = classical_score("P1", hu, mask, INSTANCES, SPACING, 3.0)
    assert score.row["agatston"] == pytest.approx(2.0 * 4)


def test_no_calcium_scores_zero():
    hu, mask = patient()
    score = classical_score("P1", hu, mask, INSTANCES, SPACING, 3.0)
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
    score = classical_score("P1", hu, mask, INSTANCES, SPACING, 3.0, grid=3)
    assert [r["tiles"] for r in score.lesions] == ["3", "5,6", "7"]

    # The datasets call exactly the tiles that show a lesion calcium.
    result = build_patient_datasets(
        tmp_path, "P1", hu, mask, INSTANCES, SPACING, 3.0, None, hu >= 130, DatasetSettings()
    )
    calcium_tiles = {
        (row["slice"], row["tile"]) for row in result.rows["cropped"] if row["label"] == "calcium"
    }
    from_lesions = {(r["slice"], int(t)) for r in score.lesions for t in r["tiles"].split(",")}
    assert calcium_tiles == from_lesions == {(11, 3), (12, 5), (12, 6), (13, 7)}


def test_instance_numbers_must_fit_the_volume():
    hu, mask = patient()
    with pytest.raises(ScoringError, match="P1: 2 instance numbers for 3 slices"):
        classical_score("P1", hu, mask, [1, 2], SPACING, 3.0)
    with pytest.raises(ScoringError, match="P1: heart mask shape"):
        classical_score("P1", hu, mask[:, :10], INSTANCES, SPACING, 3.0)
    volume = Volume(hu, SPACING, 3.0, 3.0, np.array(INSTANCES), np.zeros(3))
    with pytest.raises(ScoringError, match="P1: the segmentation's slices"):
        score_volume("P1", volume, mask, [1, 2, 3])


def test_refused_study_gives_no_rows():
    empty = np.zeros((0, 0, 0), dtype=bool)
    assert score_volume("P1", None, empty, np.zeros(0)) is None


def test_score_volume_of_an_ingested_volume():
    hu, mask = patient((0, slice(20, 24), slice(20, 24), 250))
    volume = Volume(hu, SPACING, 3.0, 3.0, np.array(INSTANCES), np.zeros(3))
    score = score_volume("P1", volume, mask, INSTANCES)
    assert score.row["agatston"] == pytest.approx(8.0)
    assert score.lesions[0]["slice"] == 11


def lesion_rows(tmp_path):
    """Lesions of P1 (tiles 3, then 5,6; 8 + 12 = 20 points) and none of P2, read back from
    their tables as the workflow does (strings)."""
    hu, mask = patient(
        (0, slice(16, 20), slice(38, 42), 250), (1, slice(27, 30), slice(32, 36), 500)
    )
    p1 = classical_score("P1", hu, mask, INSTANCES, SPACING, 3.0)
    p2 = classical_score("P2", *patient(), INSTANCES, SPACING, 3.0)
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
    assert rows == [
        {
            "patient_id": "P1",
            "method": "hybrid:cropped/resnet50",
            "agatston": 8.0,
            "volume_mm3": 12.0,
            "risk_category": "1-10",
            "n_lesions": 1,
        },
        {
            "patient_id": "P2",
            "method": "hybrid:cropped/resnet50",
            "agatston": 0.0,
            "volume_mm3": 0.0,
            "risk_category": "0",
            "n_lesions": 0,
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
