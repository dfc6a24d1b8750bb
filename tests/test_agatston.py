"""The Agatston algorithm against scores computed by hand on constructed slices."""

import numpy as np
import pytest

from cacflow.scoring.agatston import agatston_score, cac_class, density_weight, risk_category

SPACING = (0.5, 0.5)  # 0.25 mm^2 per pixel


def volume_with(*blocks, shape=(3, 40, 40), background=40):
    """A volume of soft tissue with rectangular blocks (slice, rows, cols, hu)."""
    hu = np.full(shape, background, dtype=np.int16)
    for k, rows, cols, value in blocks:
        hu[k, rows, cols] = value
    return hu


@pytest.mark.parametrize(
    ("peak", "weight"),
    [(129, 0), (130, 1), (199, 1), (200, 2), (299, 2), (300, 3), (399, 3), (400, 4), (1500, 4)],
)
def test_density_weight_edges(peak, weight):
    assert density_weight(peak) == weight


def test_each_weight_times_area():
    # Four lesions of 4x4 pixels = 4 mm^2, peaks in each weight band: 4 * (1 + 2 + 3 + 4) = 40.
    hu = volume_with(
        (0, slice(2, 6), slice(2, 6), 150),
        (0, slice(10, 14), slice(10, 14), 250),
        (1, slice(2, 6), slice(20, 24), 350),
        (2, slice(30, 34), slice(30, 34), 900),
    )
    result = agatston_score(hu, None, SPACING, slice_spacing_mm=3.0)
    assert result.total == pytest.approx(40.0)
    assert sorted(lesion.weight for lesion in result.lesions) == [1, 2, 3, 4]
    assert result.volume_mm3 == pytest.approx(4 * 4.0 * 3.0)


def test_peak_not_mean_sets_the_weight():
    hu = volume_with((0, slice(2, 6), slice(2, 6), 140), (0, slice(3, 4), slice(3, 4), 420))
    result = agatston_score(hu, None, SPACING, 3.0)
    assert result.total == pytest.approx(4.0 * 4)


def test_130_hu_edge():
    below = volume_with((0, slice(2, 6), slice(2, 6), 129))
    at = volume_with((0, slice(2, 6), slice(2, 6), 130))
    assert agatston_score(below, None, SPACING, 3.0).total == 0
    assert agatston_score(at, None, SPACING, 3.0).total == pytest.approx(4.0)


def test_1_mm2_edge():
    # 3 pixels = 0.75 mm^2 is noise; 4 pixels = 1.0 mm^2 counts.
    small = volume_with((0, slice(2, 3), slice(2, 5), 500))
    exact = volume_with((0, slice(2, 3), slice(2, 6), 500))
    assert agatston_score(small, None, SPACING, 3.0).total == 0
    assert agatston_score(exact, None, SPACING, 3.0).total == pytest.approx(1.0 * 4)


def test_eight_connectivity_joins_diagonal_pixels():
    hu = np.full((1, 10, 10), 0, dtype=np.int16)
    for i in range(4):
        hu[0, i, i] = 300  # a diagonal line: one lesion of 4 pixels = 1 mm^2
    result = agatston_score(hu, None, SPACING, 3.0)
    assert len(result.lesions) == 1
    assert result.total == pytest.approx(3.0)


def test_slice_spacing_normalisation():
    hu = volume_with((0, slice(2, 6), slice(2, 6), 500))
    assert agatston_score(hu, None, SPACING, 3.0).total == pytest.approx(16.0)
    assert agatston_score(hu, None, SPACING, 1.5).total == pytest.approx(8.0)
    assert agatston_score(hu, None, SPACING, 2.5).total == pytest.approx(16.0 * 2.5 / 3)


def test_region_restricts_candidates_and_labels_name_lesions():
    hu = volume_with((0, slice(2, 6), slice(2, 6), 500), (0, slice(20, 24), slice(20, 24), 500))
    labels = np.zeros(hu.shape, dtype=np.int16)
    labels[0, 2:6, 2:6] = 7
    result = agatston_score(hu, labels > 0, SPACING, 3.0, lesion_labels=labels)
    assert result.total == pytest.approx(16.0)
    assert result.score_by_label() == {7: pytest.approx(16.0)}
    assert result.score_by_slice(3).tolist() == pytest.approx([16.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("score", "category"),
    [(0, "0"), (0.8, "1-10"), (10, "1-10"), (10.4, "1-10"), (11, "11-100"), (100, "11-100"),
     (101, "101-400"), (400, "101-400"), (401, ">400")],
)  # fmt: skip
def test_risk_categories(score, category):
    assert risk_category(score) == category


def test_low_high_class_at_20():
    assert cac_class(19.9) == "low"
    assert cac_class(20) == "high"
