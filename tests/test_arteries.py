"""Per-artery scores: a lesion's artery from its place round the heart's long axis, and the
LAD/LCX boundary from the LAD's course."""

import numpy as np
import pytest

from cacflow.scoring.arteries import heart_axes, lesion_arteries, score_by_artery

PIXEL_MM, SLICE_MM = (1.5, 1.5), 3.0
CENTRE = np.array([90.0, 90.0, -60.0])  # mm: x left, y posterior, z superior
LONG_AXIS = np.array([0.6, -0.6, -0.53]) / np.linalg.norm([0.6, -0.6, -0.53])  # to the apex


def heart_mask() -> np.ndarray:
    """An ellipsoidal heart (semi-axes 60 mm along the long axis, 40 mm across) pointing
    left, forward and down, as a heart lies in the chest."""
    k, r, c = np.indices((40, 120, 120))
    points = np.stack([c * PIXEL_MM[1], r * PIXEL_MM[0], -k * SLICE_MM], axis=-1) - CENTRE
    along = points @ LONG_AXIS
    across = np.linalg.norm(points - along[..., None] * LONG_AXIS, axis=-1)
    return (along / 60.0) ** 2 + (across / 40.0) ** 2 <= 1.0


def on_surface(t_mm: float, angle_deg: float) -> tuple[float, float, float]:
    """(slice, row, col) of the point `t_mm` along the long axis from the centre, on the
    surface at `angle_deg` round it from anterior towards the patient's right."""
    forward = np.array([0.0, -1.0, 0.0])
    anterior = forward - (forward @ LONG_AXIS) * LONG_AXIS
    anterior /= np.linalg.norm(anterior)
    right = np.cross(LONG_AXIS, anterior)
    radius = 40.0 * np.sqrt(1 - (t_mm / 60.0) ** 2)
    angle = np.radians(angle_deg)
    p = CENTRE + t_mm * LONG_AXIS + radius * (np.cos(angle) * anterior + np.sin(angle) * right)
    return -p[2] / SLICE_MM, p[1] / PIXEL_MM[0], p[0] / PIXEL_MM[1]


def artery_at(axes, k, r, c) -> str:
    """The artery of a patient's only lesion."""
    return lesion_arteries(axes, [(k, r, c)], [10.0], PIXEL_MM, SLICE_MM)[0]


def test_the_mask_gives_the_long_axis_and_the_grooves_their_arteries():
    mask = heart_mask()
    axes = heart_axes(mask, PIXEL_MM, SLICE_MM)
    assert axes.long_axis @ LONG_AXIS > 0.99
    assert axes.right[0] < 0  # towards the patient's right (x is left)
    expected = {
        (20.0, 350.0): "LAD",  # anterior interventricular groove, half way to the apex
        (45.0, 5.0): "LAD",  # near the apex
        (-30.0, 60.0): "RCA",  # right AV groove
        (-10.0, 160.0): "RCA",  # round the right, towards the crux
        (10.0, 200.0): "RCA",  # posterior interventricular groove (right dominance)
        (-30.0, 250.0): "LCX",  # left AV groove
        (-30.0, 310.0): "LCX",
    }
    for (t_mm, angle), artery in expected.items():
        where = on_surface(t_mm, angle)
        assert artery_at(axes, *where) == artery, (t_mm, angle)


def test_scores_add_up_by_artery_and_an_empty_mask_has_no_axes():
    lesions = [
        {"artery": "LAD", "score": "10.5"},
        {"artery": "RCA", "score": 4.0},
        {"artery": "LAD", "score": 1.5},
    ]
    assert score_by_artery(lesions) == pytest.approx({"LAD": 12.0, "LCX": 0.0, "RCA": 4.0})
    assert heart_axes(np.zeros((3, 8, 8), dtype=bool), PIXEL_MM, SLICE_MM) is None


def test_a_series_flipped_left_right_keeps_its_arteries_by_its_orientation():
    # The same heart exported with columns running right to left (ImageOrientationPatient
    # row direction -x): the same artery for every groove, and the mirror image without it.
    mask = heart_mask()
    flipped = mask[:, :, ::-1]
    n_cols = mask.shape[2]
    mirrored = (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    axes = heart_axes(flipped, PIXEL_MM, SLICE_MM, mirrored)
    assumed = heart_axes(flipped, PIXEL_MM, SLICE_MM)  # standard axial assumed
    wrong = 0
    for t_mm, angle, artery in ((20.0, 350.0, "LAD"), (-30.0, 60.0, "RCA"), (-30.0, 250.0, "LCX")):
        k, r, c = on_surface(t_mm, angle)
        assert artery_at(axes, k, r, n_cols - 1 - c) == artery
        wrong += artery_at(assumed, k, r, n_cols - 1 - c) != artery
    assert wrong >= 2  # RCA and LCX swap sides in a mirrored heart


def course_at(angles: tuple[float, float]) -> list[tuple[float, float, float]]:
    """Two LAD lesions down its groove, at the centre's level and 20 mm below it."""
    return [on_surface(t_mm, angle) for t_mm, angle in zip((0.0, 20.0), angles, strict=True)]


def test_the_lad_s_course_sets_where_the_lcx_begins():
    # At the AV groove (30 mm above the centre) beside the bifurcation: plaques at 333, 340
    # and 349 deg and one at 300 deg. The fixed boundary (335 deg) calls the first LCX.
    axes = heart_axes(heart_mask(), PIXEL_MM, SLICE_MM)
    groove = [on_surface(-30.0, angle) for angle in (333.0, 340.0, 349.0, 300.0)]
    scores = [20.0] * 6
    alone = lesion_arteries(axes, groove, scores[:4], PIXEL_MM, SLICE_MM)
    assert alone == ["LCX", "LAD", "LAD", "LCX"]
    # The LAD's calcium further down its groove at 350 and 356 deg: the boundary lies 6 deg
    # behind their mean (353 deg), at 347 deg, so the plaque at 340 deg is the LCX's.
    course = course_at((350.0, 356.0))
    arteries = lesion_arteries(axes, groove + course, scores, PIXEL_MM, SLICE_MM)
    assert arteries == ["LCX", "LCX", "LAD", "LCX", "LAD", "LAD"]
    fixed = lesion_arteries(axes, groove + course, scores, PIXEL_MM, SLICE_MM, lad_course=False)
    assert fixed == alone + ["LAD", "LAD"]
    # An LAD running further back, at 336 and 338 deg: the boundary moves back to 331 deg,
    # and the plaque at 333 deg lies on the LAD.
    course = course_at((336.0, 338.0))
    arteries = lesion_arteries(axes, groove + course, scores, PIXEL_MM, SLICE_MM)
    assert arteries == ["LAD", "LAD", "LAD", "LCX", "LAD", "LAD"]
    # The mean is weighted by score: lesions at 336 and 356 deg put the boundary at 340 deg
    # with equal scores, at 331 deg when the one at 336 deg weighs 20 times more, and the
    # plaque at 333 deg moves from the LCX to the LAD.
    course = course_at((336.0, 356.0))
    equal = lesion_arteries(axes, groove + course, scores, PIXEL_MM, SLICE_MM)
    heavy = [20.0] * 4 + [100.0, 5.0]
    weighted = lesion_arteries(axes, groove + course, heavy, PIXEL_MM, SLICE_MM)
    assert (equal[0], weighted[0]) == ("LCX", "LAD")
    # A course across 0 deg (356 and 6 deg, mean 1 deg): the boundary is 355 deg, and the
    # plaque at 349 deg lies behind it.
    across = lesion_arteries(axes, groove + course_at((356.0, 6.0)), scores, PIXEL_MM, SLICE_MM)
    assert across == ["LCX", "LCX", "LCX", "LCX", "LAD", "LAD"]
    # Lesions more than 20 mm above the centre (the base, where the LCX runs) do not mark
    # the course, and the RCA's take no part: the fixed sectors hold.
    near = [on_surface(-24.0, 356.0), on_surface(10.0, 60.0)]
    arteries = lesion_arteries(axes, groove + near, scores, PIXEL_MM, SLICE_MM)
    assert arteries == ["LCX", "LAD", "LAD", "LCX", "LAD", "RCA"]
    # An LAD that runs at 332-334 deg, in the LCX's fixed sector: its calcium below the base
    # marks the course all the same (boundary 327 deg), and it and the plaque at 333 deg at
    # the groove stay on the LAD.
    behind = lesion_arteries(axes, groove + course_at((332.0, 334.0)), scores, PIXEL_MM, SLICE_MM)
    assert behind == ["LAD", "LAD", "LAD", "LCX", "LAD", "LAD"]
    # A marginal branch of the LCX below the base (290 deg) lies outside the window and
    # leaves the boundary where the LAD puts it (347 deg).
    branch = course_at((350.0, 356.0)) + [on_surface(10.0, 290.0)]
    arteries = lesion_arteries(axes, groove + branch, scores + [20.0], PIXEL_MM, SLICE_MM)
    assert arteries == ["LCX", "LCX", "LAD", "LCX", "LAD", "LAD", "LCX"]
    assert lesion_arteries(axes, [], [], PIXEL_MM, SLICE_MM) == []


def test_the_course_window_runs_from_300_deg_and_20_mm_above_the_centre():
    axes = heart_axes(heart_mask(), PIXEL_MM, SLICE_MM)
    groove = [on_surface(-40.0, angle) for angle in (333.0, 340.0, 349.0, 300.0)]
    fixed = ["LCX", "LAD", "LAD", "LCX"]

    def arteries(t_mm: float, angle: float) -> list[str]:
        lesions = groove + [on_surface(t_mm, angle)]
        return lesion_arteries(axes, lesions, [20.0] * 5, PIXEL_MM, SLICE_MM)

    # At 302 deg the lesion marks the course (boundary 296 deg): all five are the LAD's.
    assert arteries(10.0, 302.0) == ["LAD"] * 5
    # At 298 deg it lies outside the window: the fixed sectors hold.
    assert arteries(10.0, 298.0) == fixed + ["LCX"]
    # At 350 deg, 19 mm above the centre it marks the course (boundary 344 deg); 21 mm
    # above, it lies in the base, where the LCX runs, and does not.
    assert arteries(-19.0, 350.0) == ["LCX", "LCX", "LAD", "LCX", "LAD"]
    assert arteries(-21.0, 350.0) == fixed + ["LAD"]
