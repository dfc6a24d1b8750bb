"""Heart segmentation against the synthetic truth, on patients the tuning never saw.

The method was tuned on synthetic seed 2021 only. Here: seed 777, other pixel spacings
(0.4-0.9 mm at 512 px, ~1.4 mm at 256 px: another field of view), 2.5 mm slices, and the
radon (sinogram) noise model. Targets are asserted on these unseen patients.
"""

import numpy as np
import pytest

from cacflow.imaging.segmentation import (
    SegmentationError,
    SegmentationSettings,
    segment_heart,
    segmentation_scores,
)
from cacflow.synthetic.synth import SynthSettings, simulate_patient

UNSEEN_SEED = 777
# (patient, settings): four 512 px patients with 2.5 mm slices and two 256 px patients
# whose 1.4 mm pixels cover another field of view.


def unseen(size: int, spacing_512: tuple[float, float], thickness: float, **kw) -> SynthSettings:
    """Settings of the unseen cohort; the spacing is given for 512 px, as the phantom does."""
    return SynthSettings(
        seed=UNSEEN_SEED,
        size=size,
        pixel_spacing_mm=spacing_512,
        slice_thickness_mm=(thickness,),
        noise_sd_hu=20.0,
        **kw,
    )


COHORT = [(f"SYN{i:04d}", unseen(512, (0.4, 0.9), 2.5)) for i in (1, 2, 3, 4)] + [
    (f"SYN{i:04d}", unseen(256, (0.7, 0.7), 3.0)) for i in (5, 6)
]


def segment(patient):
    acq = patient.acquisition
    return segment_heart(patient.volume.hu, acq.pixel_spacing_mm, acq.slice_thickness_mm)


def scores(patient, mask) -> dict:
    v = patient.volume
    return segmentation_scores(
        mask,
        v.heart_mask,
        v.hu,
        v.lesion_labels,
        v.lesion_kind,
        patient.acquisition.pixel_spacing_mm,
    )


def pixel_centres_mm(acq):
    """x (columns) and y (rows) of the pixel centres, in patient mm."""
    index = np.arange(acq.size) * acq.pixel_spacing_mm
    return acq.origin_x_mm + index, acq.origin_y_mm + index


def descending_aorta_lumen(patient) -> np.ndarray:
    """Truth pixels of the descending aorta's lumen, slice by slice (from the phantom)."""
    acq, aorta = patient.acquisition, patient.anatomy.descending_aorta
    x, y = pixel_centres_mm(acq)
    lumen = np.zeros(patient.volume.hu.shape, dtype=bool)
    for k, z in enumerate(patient.volume.slice_z_mm):
        for p0, p1, radius in zip(aorta.p0, aorta.p1, aorta.radius, strict=True):
            if not min(p0[2], p1[2]) <= z <= max(p0[2], p1[2]):
                continue
            centre = p0 + (z - p0[2]) / (p1[2] - p0[2]) * (p1 - p0)
            lumen[k] |= (x[None, :] - centre[0]) ** 2 + (y[:, None] - centre[1]) ** 2 <= radius**2
    return lumen


@pytest.fixture(scope="module")
def cohort():
    """Unseen patients with their predicted masks (rendered once per test worker)."""
    patients = []
    for patient_id, settings in COHORT:
        patient = simulate_patient(patient_id, settings)
        patients.append((patient, segment(patient)))
    return patients


@pytest.mark.slow
def test_unseen_cohort_dice_lesions_and_empty_slices(cohort):
    results = [scores(patient, mask) for patient, mask in cohort]
    for (patient, _), result in zip(cohort, results, strict=True):
        acq = patient.acquisition
        print(
            f"{patient.patient_id} {acq.size}px {acq.pixel_spacing_mm:.2f}mm "
            f"{acq.slice_thickness_mm}mm: {result}"
        )
    # Mean Dice over every slice that holds heart, all patients pooled.
    dice = [r["dice_heart_slices"] for r in results]
    weights = [r["n_heart_slices"] for r in results]
    assert np.average(dice, weights=weights) >= 0.90
    assert min(dice) >= 0.85
    # Coronary lesions (>= 1 mm^2) kept whole, pooled over the patients.
    n_lesions = sum(r["n_lesions"] for r in results)
    n_inside = sum(r["n_lesions_inside"] for r in results)
    assert n_lesions >= 10, "the cohort should hold coronary calcium to check"
    assert n_inside / n_lesions >= 0.99
    # Slices without heart (above it: great vessels; below: liver) stay mostly empty.
    n_nonheart = sum(r["n_nonheart_slices"] for r in results)
    n_nonempty = sum(r["nonempty_rate_nonheart"] * r["n_nonheart_slices"] for r in results)
    assert n_nonheart > 0
    assert n_nonempty / n_nonheart <= 0.30


@pytest.mark.slow
def test_descending_aorta_left_out(cohort):
    for patient, mask in cohort:
        lumen = descending_aorta_lumen(patient)
        assert lumen.sum() > 1000, "the aorta should be in the scan range"
        # None of the calcium round the aorta (below), and no more of its lumen than an edge
        # pixel of the mask (it is drawn on a 2 mm grid, then refined): at most 0.1 %.
        assert (lumen & mask).sum() <= 0.001 * lumen.sum(), patient.patient_id
        acq = patient.acquisition
        around = np.zeros_like(lumen)
        x, y = pixel_centres_mm(acq)
        for k in range(len(lumen)):
            if lumen[k].any():
                rows, cols = np.nonzero(lumen[k])
                cy, cx = y[rows].mean(), x[cols].mean()
                r = np.sqrt(lumen[k].sum() / np.pi) * acq.pixel_spacing_mm + 5.0
                around[k] = (x[None, :] - cx) ** 2 + (y[:, None] - cy) ** 2 <= r**2
        wall_calcium = around & patient.volume.noncoronary_calcium & (patient.volume.hu >= 130)
        assert not (wall_calcium & mask).any(), patient.patient_id


@pytest.mark.slow
def test_radon_noise_small_patient():
    # Sinogram noise (streaks, ~40-60 HU in the heart at 1.7 mm pixels) blurs the thin
    # pericardial line that sets the mask's margin. This patient measured 0.80 (per-slice
    # Dice) and 0.86 (volume Dice): below the 0.90 reached with Gaussian noise, so the
    # bounds here guard against a collapse, not the target.
    settings = unseen(192, (0.6, 0.7), 3.0, noise_model="radon")
    patient = simulate_patient("SYN0007", settings)
    result = scores(patient, segment(patient))
    print(result)
    assert result["dice_heart_slices"] >= 0.75
    assert result["dice_volume"] >= 0.83
    assert result["nonempty_rate_nonheart"] <= 0.30


def test_same_anatomy_at_two_fields_of_view():
    # One patient scanned with 1.0 mm and with 1.6 mm pixels (256 px: 256 and 410 mm
    # fields of view): the masks must agree in patient coordinates.
    masks, acqs, patients = [], [], []
    for spacing_512 in (0.5, 0.8):
        settings = unseen(256, (spacing_512, spacing_512), 3.0)
        patient = simulate_patient("SYN0008", settings)
        patients.append(patient)
        masks.append(segment(patient))
        acqs.append(patient.acquisition)
    fine, coarse = acqs
    assert fine.pixel_spacing_mm == pytest.approx(1.0)
    assert coarse.pixel_spacing_mm == pytest.approx(1.6)
    np.testing.assert_allclose(patients[0].volume.slice_z_mm, patients[1].volume.slice_z_mm)
    # The coarse mask, sampled at the fine pixel centres (nearest pixel).
    x, y = pixel_centres_mm(fine)
    cols = np.rint((x - coarse.origin_x_mm) / coarse.pixel_spacing_mm).astype(int)
    rows = np.rint((y - coarse.origin_y_mm) / coarse.pixel_spacing_mm).astype(int)
    assert cols.min() >= 0 and rows.min() >= 0  # the wider view holds the narrower one
    resampled = masks[1][:, rows[:, None], cols[None, :]]
    overlap = 2 * (masks[0] & resampled).sum() / (masks[0].sum() + resampled.sum())
    assert overlap >= 0.93
    area_fine = masks[0].sum() * fine.pixel_spacing_mm**2
    area_coarse = masks[1].sum() * coarse.pixel_spacing_mm**2
    assert area_coarse == pytest.approx(area_fine, rel=0.10)  # measured: up to 7 %
    for patient, mask in zip(patients, masks, strict=True):
        assert scores(patient, mask)["dice_volume"] >= 0.90


def test_zoomed_view_that_cuts_the_chest_wall_away():
    # A cardiac field of view of about 190 mm: on this patient the reconstruction circle
    # cuts through both lungs, so that they run out to the scan's edge and only their
    # density tells them from outside air (without it: volume Dice 0.64, 7 of 15 lesions).
    settings = SynthSettings(
        seed=1186006929,
        size=256,
        pixel_spacing_mm=(0.35, 0.45),
        slice_thickness_mm=(2.5,),
        noise_sd_hu=20.0,
    )
    patient = simulate_patient("SYN0007", settings)
    hu = patient.volume.hu
    size = patient.acquisition.size
    rows, cols = np.indices((size, size))
    radius = np.hypot(rows - (size - 1) / 2, cols - (size - 1) / 2)
    edge = (radius > size / 2 - 4) & (radius <= size / 2 - 1)
    widest = int(np.argmax(patient.volume.heart_mask.sum(axis=(1, 2))))
    lung_at_edge = (hu[widest][edge] > -950) & (hu[widest][edge] < -700)
    assert lung_at_edge.mean() >= 0.3, "the lungs should reach the scan's edge"
    result = scores(patient, segment(patient))
    print(result)
    assert result["dice_volume"] >= 0.90
    assert result["n_lesions"] >= 10
    assert result["n_lesions_inside"] == result["n_lesions"]


def test_single_slice():
    settings = unseen(256, (0.7, 0.7), 3.0)
    probe = simulate_patient("SYN0009", settings, slices=[])
    middle = probe.acquisition.n_slices // 2
    patient = simulate_patient("SYN0009", settings, slices=[middle])
    mask = segment(patient)
    assert mask.shape == patient.volume.hu.shape == (1, 256, 256)
    assert scores(patient, mask)["dice_heart_slices"] >= 0.85


def test_air_only_and_tissue_only_volumes_give_empty_masks():
    air = np.full((4, 64, 64), -1000, dtype=np.int16)
    water = np.full((4, 64, 64), 40, dtype=np.int16)
    for hu in (air, water, np.zeros((0, 64, 64), dtype=np.int16)):
        mask = segment_heart(hu, 0.7, 3.0)
        assert mask.shape == hu.shape and mask.dtype == bool and not mask.any()


def test_bad_input_is_refused():
    with pytest.raises(SegmentationError, match="slice x row x col"):
        segment_heart(np.zeros((64, 64), dtype=np.int16), 0.7)
    with pytest.raises(SegmentationError, match="pixel spacing"):
        segment_heart(np.zeros((1, 64, 64), dtype=np.int16), (0.7, -1.0))
    with pytest.raises(SegmentationError, match="slice spacing"):
        segment_heart(np.zeros((1, 64, 64), dtype=np.int16), 0.7, float("nan"))


def test_settings_are_millimetres_and_frozen():
    settings = SegmentationSettings()
    with pytest.raises(AttributeError):
        settings.chamber_opening_mm = 1.0  # type: ignore[misc]
    custom = SegmentationSettings(chamber_opening_mm=6.0)
    assert custom.chamber_opening_mm == 6.0 and custom.working_spacing_mm == 2.0


def test_scores_on_constructed_masks():
    # Two slices, 0.5 mm pixels (0.25 mm^2). Slice 0: truth 10x10, prediction 10x8.
    shape = (3, 20, 20)
    hu = np.full(shape, 40, dtype=np.int16)
    true = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    true[0, 5:15, 5:15] = True
    pred[0, 5:15, 5:13] = True
    pred[2, 0:2, 0:2] = True  # a slice without heart, predicted non-empty
    labels = np.zeros(shape, dtype=np.int16)
    kind = np.array(["", "coronary", "aortic_wall", "coronary"])
    # Lesion 1: 2x2 = 1 mm^2 inside; lesion 3: 2x2 half outside; lesion 3 again, 1x3 =
    # 0.75 mm^2 (too small to count); lesion 2 is not coronary.
    for lesion, rows, cols in ((1, (6, 8), (6, 8)), (3, (10, 12), (12, 14)), (2, (6, 8), (10, 12))):
        labels[0, rows[0] : rows[1], cols[0] : cols[1]] = lesion
        hu[0, rows[0] : rows[1], cols[0] : cols[1]] = 400
    labels[1, 2, 2:5] = 3
    hu[1, 2, 2:5] = 400
    result = segmentation_scores(pred, true, hu, labels, kind, 0.5)
    assert result["dice_heart_slices"] == pytest.approx(2 * 80 / (100 + 80))
    assert result["n_heart_slices"] == 1 and result["n_nonheart_slices"] == 2
    assert result["nonempty_rate_nonheart"] == pytest.approx(0.5)
    assert result["n_lesions"] == 2 and result["n_lesions_inside"] == 1
    assert result["lesion_inside_fraction"] == pytest.approx(0.5)
    assert result["dice_volume"] == pytest.approx(2 * 80 / (100 + 84))
    no_lesions = segmentation_scores(pred, true, hu, np.zeros_like(labels), kind, 0.5)
    assert no_lesions["n_lesions"] == 0 and np.isnan(no_lesions["lesion_inside_fraction"])
