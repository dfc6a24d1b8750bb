"""Lesion-level detection against a reference map, on constructed slices."""

import numpy as np
import pytest

from cacflow.scoring.lesions import lesion_detection, lesion_eval_row, lesion_evaluation


def test_detected_missed_and_false_lesions_are_counted():
    hu = np.zeros((2, 40, 40))
    true = np.zeros(hu.shape, bool)
    hu[0, 5:9, 5:9] = 400  # true, found: 16 px of 0.5 mm = 4 mm^2
    hu[0, 20:24, 20:24] = 400  # true, missed
    hu[1, 30:34, 5:9] = 400  # found, not calcium of the reference: a false positive
    hu[1, 10, 10] = 400  # found, 0.25 mm^2: below the Agatston minimum, no lesion
    hu[1, 2:6, 30:34] = 120  # true map but below 130 HU: no lesion
    true[0, 5:9, 5:9] = true[0, 20:24, 20:24] = true[1, 2:6, 30:34] = True
    found = np.zeros(hu.shape, bool)
    found[0, 6:8, 6:8] = True  # part of the first lesion is enough
    found[1] = True
    found[1, 2:6, 30:34] = False
    result = lesion_detection(hu, found, true, (0.5, 0.5), 2.0)
    assert result.true_lesions == 2 and result.detected == 1
    assert result.found_lesions == 2 and result.false_positives == 1
    # Volumes: 16 px x 0.25 mm^2 x 2 mm = 8 mm^3 a lesion; a found lesion is its kept pixels.
    assert result.true_volume_mm3 == pytest.approx(16.0)
    assert result.detected_volume_mm3 == pytest.approx(8.0)
    assert result.found_volume_mm3 == pytest.approx(8.0 + 2.0)  # 16 px false, 4 px kept
    assert result.false_volume_mm3 == pytest.approx(8.0)


def test_lesions_are_per_slice_and_eight_connected():
    hu = np.zeros((2, 20, 20))
    hu[:, 4:7, 4:7] = 300
    hu[0, 7:10, 7:10] = 300  # touches the first at a corner: one lesion
    truth = hu > 0
    result = lesion_detection(hu, truth, truth, (1.0, 1.0))
    assert (result.true_lesions, result.detected, result.false_positives) == (2, 2, 0)


def test_evaluation_pools_patients_and_compares_scores_with_the_truth():
    hu = np.zeros((1, 20, 20))
    hu[0, 2:6, 2:6] = hu[0, 10:14, 10:14] = 400
    true = np.zeros(hu.shape, bool)
    true[0, 2:6, 2:6] = True
    found_both = hu > 0  # one true lesion found, one false
    rows = [
        lesion_eval_row("P1", "classical", lesion_detection(hu, found_both, true, (1.0, 1.0))),
        lesion_eval_row("P2", "classical", lesion_detection(hu, true, true, (1.0, 1.0))),
    ]
    scores = [
        {"patient_id": p, "method": "classical", "agatston": a, "volume_mm3": v,
         "risk_category": c, "truth_agatston": ta, "truth_volume_mm3": tv,
         "truth_risk_category": tc}
        for p, a, v, c, ta, tv, tc in (
            ("P1", 128.0, 96.0, "101-400", 64.0, 48.0, "11-100"),
            ("P2", 64.0, 48.0, "11-100", 64.0, 48.0, "11-100"),
            ("P3", 5.0, 3.0, "1-10", 5.0, 3.0, "1-10"),  # no lesion-level row: left out
        )
    ]  # fmt: skip
    (row,) = lesion_evaluation(rows, scores)
    assert row["method"] == "classical" and row["n_patients"] == 2
    assert (row["true_lesions"], row["found_lesions"]) == (2, 3)
    assert row["sensitivity"] == row["sensitivity_volume"] == 1.0
    assert row["ppv"] == pytest.approx(2 / 3, abs=1e-4)
    assert row["ppv_volume"] == pytest.approx(2 / 3, abs=1e-4)  # lesions of equal volume
    assert row["false_positives_per_scan"] == 0.5
    assert row["icc_agatston"] < 1.0 and row["kappa_linear"] < 1.0
