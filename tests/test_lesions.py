"""Lesion-level detection against a reference map, on constructed slices."""

import numpy as np

from cacflow.scoring.lesions import lesion_detection


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
    result = lesion_detection(hu, found, true, (0.5, 0.5))
    assert result.true_lesions == 2 and result.detected == 1
    assert result.found_lesions == 2 and result.false_positives == 1


def test_lesions_are_per_slice_and_eight_connected():
    hu = np.zeros((2, 20, 20))
    hu[:, 4:7, 4:7] = 300
    hu[0, 7:10, 7:10] = 300  # touches the first at a corner: one lesion
    truth = hu > 0
    result = lesion_detection(hu, truth, truth, (1.0, 1.0))
    assert (result.true_lesions, result.detected, result.false_positives) == (2, 2, 0)
