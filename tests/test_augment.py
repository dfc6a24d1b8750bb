"""Materialized augmentation on real synthetic images: training patients only, labels that
stay true, deterministic."""

from pathlib import Path

import numpy as np
import pytest

from cacflow.learning import augment
from cacflow.learning.augment import (
    IDENTITY,
    AugmentSettings,
    augment_dataset,
    forward_matrices,
    kept_points,
    read_grey,
    warp,
)
from cacflow.tables import read_tsv

SPLIT = {"SYN0006": "train", "SYN0001": "validation"}


@pytest.fixture(scope="module")
def cropped(mini_datasets):
    root = mini_datasets / "datasets" / "cropped"
    return root, read_tsv(root / "manifest.tsv")


def test_only_training_images_are_read_and_augmented(cropped, tmp_path, monkeypatch):
    root, rows = cropped
    opened = []
    for name in ("read_grey", "read_image"):
        read = getattr(augment, name)
        monkeypatch.setattr(augment, name, lambda p, read=read: opened.append(p) or read(p))
    out = augment_dataset(rows, root, SPLIT, tmp_path, AugmentSettings(fraction=0.2), 42)
    n_train = sum(r["patient_id"] == "SYN0006" for r in rows)
    assert len(out) == round(0.2 * n_train)
    assert {r["patient_id"] for r in out} == {"SYN0006"}
    assert all(r["source_path"].startswith("SYN0006/") for r in out)
    assert len(opened) >= len(out)  # every augmented image read its source
    assert all(Path(p).relative_to(root).parts[0] == "SYN0006" for p in opened)
    manifest = read_tsv(tmp_path / "manifest.tsv")
    assert manifest == [{k: str(v) for k, v in r.items()} for r in out]
    for row in manifest[:5]:
        image = read_grey(tmp_path / row["path"])
        assert image.shape == (299, 299)


def test_labels_stay_true(cropped, tmp_path):
    root, rows = cropped
    # Large shifts push many lesions out of the frame.
    settings = AugmentSettings(fraction=1.0, width_shift=0.6, height_shift=0.6)
    out = augment_dataset(rows, root, SPLIT, tmp_path, settings, 3)
    sources = {r["path"]: r for r in rows}
    from_calcium = [r for r in out if sources[r["source_path"]]["label"] == "calcium"]
    assert {r["label"] for r in from_calcium} == {"calcium", "no_calcium"}
    for row in out:
        source = sources[row["source_path"]]
        if source["label"] == "no_calcium":
            assert row["label"] == "no_calcium"
            continue
        # Independent check: the lesion mask resampled like the image, its area in mm^2.
        params = np.array([float(row[k]) for k in augment.PARAMS])
        lesion = read_grey(root / source["lesion_mask"]) > 127
        forward = forward_matrices(params[None], *lesion.shape)[0]
        moved = warp(lesion.astype(np.uint8) * 255, forward, order=0) > 127
        area_mm2 = moved.sum() * (float(source["pixel_mm"]) / params[2]) ** 2
        if row["label"] == "calcium":
            assert float(row["lesion_area_mm2"]) >= 1.0
            assert area_mm2 > 0.5, row
            assert read_grey(tmp_path / row["lesion_mask"]).any()
        else:
            assert float(row["lesion_area_mm2"]) < 1.0
            assert area_mm2 < 2.0, row


def test_deterministic_under_a_seed(cropped, tmp_path):
    root, rows = cropped
    first = augment_dataset(rows, root, SPLIT, tmp_path / "a", AugmentSettings(), 42)
    second = augment_dataset(rows, root, SPLIT, tmp_path / "b", AugmentSettings(), 42)
    assert first == second
    for row in first:
        a = (tmp_path / "a" / row["path"]).read_bytes()
        assert a == (tmp_path / "b" / row["path"]).read_bytes()
    other = augment_dataset(rows, root, SPLIT, tmp_path / "c", AugmentSettings(), 43)
    assert other != first


def test_lesion_moved_out_of_the_frame_is_not_counted():
    lesion = np.zeros((20, 20), dtype=bool)
    lesion[2:5, 16:19] = True  # near the right edge
    points = np.argwhere(lesion)
    assert kept_points(points, forward_matrices(IDENTITY[None], 20, 20)[0], 20, 20) == 9
    shift_right = IDENTITY.copy()
    shift_right[4] = 0.2  # 4 px to the right: the lesion leaves the frame
    assert kept_points(points, forward_matrices(shift_right[None], 20, 20)[0], 20, 20) == 0
    flip = IDENTITY.copy()
    flip[3] = 1.0
    mirrored = warp(lesion.astype(np.uint8) * 255, forward_matrices(flip[None], 20, 20)[0])
    assert (mirrored > 127).sum() == 9 and mirrored[2:5, 1:4].all()


def test_identity_leaves_the_image_unchanged(cropped):
    root, rows = cropped
    image = read_grey(root / rows[0]["path"])
    same = warp(image, forward_matrices(IDENTITY[None], *image.shape)[0])
    assert np.array_equal(same, image)


def test_unknown_patient_is_refused(cropped, tmp_path):
    root, rows = cropped
    with pytest.raises(augment.AugmentError, match="not in the split table"):
        augment_dataset(rows, root, {"SYN0006": "train"}, tmp_path, AugmentSettings(), 1)
