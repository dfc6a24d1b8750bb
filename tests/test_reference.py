"""Reference lesion maps and scores (cacflow.scoring.reference) on constructed volumes."""

from __future__ import annotations

import numpy as np
import pytest

from cacflow.scoring.reference import (
    ReferenceError,
    read_lesion_map,
    reference_for_patients,
    reference_scores,
    write_lesion_map,
)

SPACING = (0.5, 0.5)


def volume_with_lesions() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """4 slices of 40x40 px at 0.5 mm: a left main plaque (400 HU, 4 mm^2), an LAD plaque
    (250 HU, 2 mm^2) and an LCX plaque (150 HU, 1 mm^2), and bright bone nobody labelled."""
    hu = np.full((4, 40, 40), 40.0)
    labels = np.zeros(hu.shape, dtype=np.int32)
    hu[1, 5:9, 5:9], labels[1, 5:9, 5:9] = 400, 1
    hu[2, 20:22, 20:24], labels[2, 20:22, 20:24] = 250, 2
    hu[3, 30:32, 30:32], labels[3, 30:32, 30:32] = 150, 3
    hu[0, 30:38, 0:8] = 1200  # outside every label
    return hu, labels, ["", "LM", "LAD", "LCX"]


def test_reference_scores_count_the_left_main_with_the_lad():
    hu, labels, arteries = volume_with_lesions()
    row, _ = reference_scores(hu, labels, np.array(arteries), SPACING, 3.0)
    # Agatston: area x density weight (400 HU: 4, 250: 2, 150: 1), 3 mm slices.
    assert row["agatston_lm"] == pytest.approx(4 * 4)
    assert row["agatston_lad"] == pytest.approx(4 * 4 + 2 * 2)
    assert row["agatston_lcx"] == pytest.approx(1 * 1)
    assert row["agatston_rca"] == 0
    assert row["agatston_total"] == pytest.approx(21)
    assert row["volume_mm3"] == pytest.approx((4 + 2 + 1) * 3.0)
    assert row["risk_category"] == "11-100"
    assert row["n_lesions"] == 3


def test_lesion_map_slices_follow_the_volume_by_instance_number(tmp_path):
    hu, labels, arteries = volume_with_lesions()
    path = tmp_path / "P1.npz"
    # Written with the slices in descending instance order, read for an ascending volume.
    write_lesion_map(path, labels[::-1], arteries, SPACING, np.array([4, 3, 2, 1]))
    lesions = read_lesion_map(path, np.array([1, 2, 3, 4]), hu.shape)
    np.testing.assert_array_equal(lesions.lesion_labels, labels)
    assert lesions.heart_mask is None
    assert lesions.coronary_mask().sum() == (labels > 0).sum()


@pytest.mark.parametrize(
    "case, message",
    [
        ("instance", "no label slice for instance numbers [9]"),
        ("shape", "label volume (4, 40, 40) differs from the image (4, 40, 41)"),
        ("artery", "lesion_artery names 2 lesion ids, labels go up to 3"),
        ("not_npz", "not a readable lesion map"),
    ],
)
def test_a_bad_lesion_map_names_the_file_and_the_problem(tmp_path, case, message):
    hu, labels, arteries = volume_with_lesions()
    path = tmp_path / "P7.npz"
    write_lesion_map(path, labels, arteries, SPACING, np.array([1, 2, 3, 4]))
    numbers, shape = np.array([1, 2, 3, 4]), hu.shape
    if case == "instance":
        numbers = np.array([1, 2, 3, 9])
    elif case == "shape":
        shape = (4, 40, 41)
    elif case == "artery":
        np.savez(path, lesion_labels=labels, lesion_artery=np.array(arteries[:2]))
    else:
        path.write_text("not a zip\n")
    with pytest.raises(ReferenceError) as error:
        read_lesion_map(path, numbers, shape)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_writing_a_map_refuses_an_unknown_artery(tmp_path):
    _, labels, _ = volume_with_lesions()
    with pytest.raises(ReferenceError, match=r"unknown arteries \['Diagonal'\]"):
        write_lesion_map(tmp_path / "P.npz", labels, ["", "LM", "Diagonal", "LCX"], SPACING, [1])


def test_reference_rows_take_the_workflows_patient_ids():
    rows = [
        {
            "patient_id": "case 1",
            "agatston_total": "12.5",
            "volume_mm3": "9",
            "risk_category": "11-100",
        },
        {"patient_id": "case 2", "agatston_total": "0", "volume_mm3": "0", "risk_category": "0"},
        {"patient_id": "elsewhere", "agatston_total": "0", "volume_mm3": "0", "risk_category": "0"},
    ]
    out, unmatched = reference_for_patients(rows, {"case 2": "P02", "case 1": "P01", "x": "P03"})
    assert [row["patient_id"] for row in out] == ["P01", "P02"]
    assert out[0]["agatston_total"] == "12.5" and out[0]["agatston_lad"] == ""
    assert unmatched == 1
    rows[0]["risk_category"] = "moderate"
    with pytest.raises(ReferenceError, match="patient case 1: risk category 'moderate'"):
        reference_for_patients(rows, {"case 1": "P01"})
