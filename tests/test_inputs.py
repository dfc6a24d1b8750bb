"""The tf.data input pipeline: what it reads per split, batches, class balance, on-the-fly
augmentation equal to the materialized one, determinism."""

import shutil
from fractions import Fraction

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from cacflow.imaging.png import png_bytes
from cacflow.learning.augment import (
    AugmentSettings,
    augment_dataset,
    forward_matrices,
    sample_params,
    warp,
)
from cacflow.learning.inputs import (
    ImageTable,
    LeakError,
    PipelineSettings,
    _balanced_turns,
    build_pipeline,
    hard_negatives,
    image_table,
    kept_lesion_area_mm2,
    model_resize,
    warp_batch,
)
from cacflow.tables import read_tsv

SPLIT = {"SYN0006": "train", "SYN0001": "validation"}


@pytest.fixture(scope="module")
def segmented(mini_datasets, tmp_path_factory):
    root = mini_datasets / "datasets" / "segmented"
    rows = read_tsv(root / "manifest.tsv")
    augmented_root = tmp_path_factory.mktemp("augmented")
    augmented = augment_dataset(rows, root, SPLIT, augmented_root, AugmentSettings(), 42)
    return root, rows, augmented_root, read_tsv(augmented_root / "manifest.tsv"), augmented


def test_each_split_reads_only_its_patients(segmented):
    root, rows, augmented_root, augmented, _ = segmented
    train = image_table(rows, root, SPLIT, "train", augmented, augmented_root)
    validation = image_table(rows, root, SPLIT, "validation")
    n_train = sum(r["patient_id"] == "SYN0006" for r in rows)
    assert len(train) == n_train + len(augmented)
    assert set(train.patients) == {"SYN0006"}
    assert set(validation.patients) == {"SYN0001"}
    validation_files = {str(root / r["path"]) for r in rows if r["patient_id"] == "SYN0001"}
    assert set(validation.files) == validation_files
    assert not validation_files & set(train.files)
    pipeline = build_pipeline(train, PipelineSettings(), training=True, seed=1)
    assert pipeline.files == train.files


def test_augmented_image_of_a_validation_patient_is_a_leak(segmented):
    root, rows, augmented_root, augmented, _ = segmented
    leaked = [{**augmented[0], "patient_id": "SYN0001"}]
    with pytest.raises(LeakError, match="not a training patient"):
        image_table(rows, root, SPLIT, "train", leaked, augmented_root)
    with pytest.raises(LeakError, match="training only"):
        image_table(rows, root, SPLIT, "validation", augmented, augmented_root)
    with pytest.raises(LeakError, match="not in the split table"):
        image_table(rows, root, {"SYN0006": "train"}, "train")


def test_batches_and_class_balance(segmented):
    root, rows, *_ = segmented
    table = image_table(rows, root, SPLIT, "train")  # both classes; not shuffled below
    pipeline = build_pipeline(table, PipelineSettings(batch_size=8), training=False, seed=1)
    labels = []
    for images, batch_labels in pipeline.dataset:
        assert images.dtype == tf.float32 and images.shape[1:] == (299, 299, 3)
        assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0
        labels += batch_labels.numpy().tolist()
    # Evaluation keeps the manifest order.
    assert labels == table.labels.tolist()
    counts = pipeline.class_counts
    assert counts["calcium"] > 0 and counts["no_calcium"] > 0
    assert counts["calcium"] + counts["no_calcium"] == len(table)
    weights = pipeline.class_weights
    assert weights[0] * counts["no_calcium"] == pytest.approx(weights[1] * counts["calcium"])


def test_training_and_evaluation_batch_sizes(segmented):
    root, rows, *_ = segmented
    table = image_table(rows, root, SPLIT, "train")
    assert len(table) > 8
    settings = PipelineSettings(batch_size=3, eval_batch_size=8)
    sizes = {}
    for training in (True, False):
        pipeline = build_pipeline(table, settings, training=training, seed=1, image_size=32)
        sizes[training] = [int(images.shape[0]) for images, _ in pipeline.dataset]
    assert sizes[True][0] == 3 and sum(sizes[True]) == len(table)
    assert sizes[False][0] == min(8, len(table)) and sum(sizes[False]) == len(table)


def test_training_reads_the_files_in_a_shuffled_order(segmented):
    """The file list is shuffled before decoding: even a buffer of one decoded image gives a
    random order (each image once per epoch), so no buffer of decoded images must fill before
    the first batch. The order depends on the seed only."""
    root, rows, *_ = segmented
    table = image_table(rows, root, SPLIT, "train")
    settings = PipelineSettings(batch_size=4, shuffle_buffer=1, cache=False)

    def fingerprints(training: bool, seed: int) -> list[float]:
        pipeline = build_pipeline(table, settings, training=training, seed=seed, image_size=24)
        return [float(tf.reduce_sum(i)) for images, _ in pipeline.dataset for i in images]

    in_order = fingerprints(False, 0)
    assert len(set(in_order)) == len(table)  # the fingerprints tell the images apart
    shuffled = fingerprints(True, 5)
    assert sorted(shuffled) == sorted(in_order) and shuffled != in_order
    assert fingerprints(True, 5) == shuffled
    assert fingerprints(True, 6) != shuffled


def test_on_the_fly_transform_equals_the_materialized_one(segmented):
    root, rows, *_ = segmented
    image = np.asarray(tf.io.decode_png(tf.io.read_file(str(root / rows[5]["path"])))[..., 0])
    params = sample_params(np.random.default_rng(0), AugmentSettings(), 4)
    forward = forward_matrices(params, *image.shape)
    forward_tf = forward_matrices(tf.constant(params, tf.float32), *image.shape, xp=tf)
    np.testing.assert_allclose(forward_tf.numpy(), forward, rtol=1e-4, atol=1e-3)
    batch = np.repeat(image[None, ..., None], 4, axis=0)
    warped = warp_batch(batch, forward_tf).numpy()[..., 0]
    for k in range(4):
        expected = warp(image, forward[k]).astype(float)
        inner = (slice(5, -5), slice(5, -5))
        assert np.abs(warped[k][inner] - expected[inner]).mean() < 0.5


def test_on_the_fly_labels_match_the_materialized_ones(segmented):
    root, rows, _, _, augmented = segmented
    sources = {r["path"]: r for r in rows}
    calcium = [r for r in augmented if sources[r["source_path"]]["label"] == "calcium"]
    assert calcium
    for row in calcium:
        source = sources[row["source_path"]]
        mask = tf.io.decode_png(tf.io.read_file(str(root / source["lesion_mask"])))[..., 0]
        points = tf.RaggedTensor.from_tensor(tf.cast(tf.where(mask > 127), tf.float32)[None])
        params = np.array([[float(row[k]) for k in ("rotation_deg", "shear_deg", "zoom",
                                                     "flip", "shift_x", "shift_y")]])  # fmt: skip
        forward = forward_matrices(params, *mask.shape)
        area = float(source["pixel_mm"]) ** 2
        kept = kept_lesion_area_mm2(points, forward, tf.constant([area]), *mask.shape)
        assert float(kept[0]) == pytest.approx(float(row["lesion_area_mm2"]), rel=1e-3)


def test_on_the_fly_pipeline_is_deterministic(segmented):
    tf.config.experimental.enable_op_determinism()
    root, rows, augmented_root, augmented, _ = segmented
    table = image_table(rows, root, SPLIT, "train", augmented, augmented_root)
    settings = PipelineSettings(on_the_fly=True, batch_size=4)

    def first_batches(seed):
        pipeline = build_pipeline(table, settings, True, seed, AugmentSettings())
        return [(x.numpy(), y.numpy()) for x, y in pipeline.dataset.take(3)]

    a, b, c = first_batches(5), first_batches(5), first_batches(6)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c, strict=True))
    # Augmented: batches differ from the plain decoded images of the same files.
    labels = np.concatenate([y for _, y in a])
    assert set(labels.tolist()) <= {0, 1}


def test_balanced_batches_are_half_calcium(segmented):
    """With 1-3 % calcium tiles, balanced batches show the network as many calcium images as
    others: each batch half and half, each class cycled on its own until its every image has
    come. Class weights then weigh both classes alike."""
    root, rows, augmented_root, augmented, _ = segmented
    table = image_table(rows, root, SPLIT, "train", augmented, augmented_root)
    settings = PipelineSettings(batch_size=6, balanced_batches=True, cache=False)
    # Evaluation keeps the natural shares and order: the reference of what each class holds.
    evaluation = build_pipeline(table, settings, training=False, seed=3, image_size=24)
    expected = {0: set(), 1: set()}
    for images, labels in evaluation.dataset:
        for image, label in zip(images, labels, strict=True):
            expected[int(label)].add(float(tf.reduce_sum(image)))
    assert len(expected[0]) > 1 and len(expected[1]) > 1

    pipeline = build_pipeline(table, settings, training=True, seed=3, image_size=24)
    assert pipeline.class_weights == {0: 1.0, 1: 1.0}
    counts = np.bincount(table.labels)
    assert pipeline.class_counts == {"no_calcium": counts[0], "calcium": counts[1]}
    seen = {0: set(), 1: set()}
    for images, labels in pipeline.dataset.take(-(-counts.max() // 3)):
        assert labels.numpy().tolist().count(1) == 3
        for image, label in zip(images, labels, strict=True):
            seen[int(label)].add(float(tf.reduce_sum(image)))
    assert seen == expected


def test_balanced_batches_need_both_classes(segmented):
    root, rows, *_ = segmented
    table = image_table(rows, root, {"SYN0006": "validation", "SYN0001": "train"}, "train")
    assert set(table.labels.tolist()) == {0}
    with pytest.raises(ValueError, match="both classes"):
        build_pipeline(table, PipelineSettings(balanced_batches=True), training=True, seed=1)


def test_hard_negatives_take_their_share_of_the_no_calcium_turns(segmented):
    """hard_negative_share 0.5: of each balanced batch of 8, 4 calcium images, 2 no_calcium
    images that show calcium candidates (the manifest's candidate_mm2) and 2 others."""
    root, rows, augmented_root, augmented, _ = segmented
    table = image_table(rows, root, SPLIT, "train", augmented, augmented_root)
    hard = hard_negatives(table)
    assert hard.any() and (table.candidate_mm2[table.labels == 1] >= 1.0).all()
    settings = PipelineSettings(
        batch_size=8, balanced_batches=True, cache=False, hard_negative_share=0.5
    )
    evaluation = build_pipeline(table, settings, training=False, seed=3, image_size=24)
    sums = np.concatenate(
        [tf.reduce_sum(images, axis=(1, 2, 3)).numpy() for images, _ in evaluation.dataset]
    )
    hard_sums = set(sums[hard].tolist())
    assert not hard_sums & set(sums[~hard].tolist())  # each image told apart by its sum

    pipeline = build_pipeline(table, settings, training=True, seed=3, image_size=24)
    for images, labels in pipeline.dataset.take(6):
        batch = tf.reduce_sum(images, axis=(1, 2, 3)).numpy()
        is_hard = np.array([s in hard_sums for s in batch.tolist()])
        assert labels.numpy().tolist().count(1) == 4
        assert is_hard.sum() == 2 and not (is_hard & (labels.numpy() == 1)).any()

    with pytest.raises(ValueError, match="hard_negative_share must be within"):
        PipelineSettings(hard_negative_share=1.5)
    none = image_table(rows, root, SPLIT, "train")
    none = type(none)(**{**none.__dict__, "candidate_mm2": np.zeros(len(none), np.float32)})
    with pytest.raises(ValueError, match="needs no_calcium images that show a calcium"):
        build_pipeline(none, settings, training=True, seed=3)


def test_hard_negatives_from_a_minimum_candidate_area(segmented):
    """hard_negative_min_mm2 keeps the no_calcium images with larger candidates only, and
    the batches draw their hard turns from those; lists of both keys give tiers. Half the
    fixture's hard negatives are given a noise-sized candidate area (1.5 mm^2) to have both
    kinds."""
    root, rows, augmented_root, augmented, _ = segmented
    table = image_table(rows, root, SPLIT, "train", augmented, augmented_root)
    every = np.flatnonzero(hard_negatives(table))
    assert len(every) >= 2 and (table.candidate_mm2[every] > 2.0).all()
    areas = table.candidate_mm2.copy()
    areas[every[::2]] = 1.5
    table = type(table)(**{**table.__dict__, "candidate_mm2": areas})
    larger = hard_negatives(table, 2.0)
    assert np.flatnonzero(larger).tolist() == every[1::2].tolist()
    assert hard_negatives(table).sum() == len(every)

    settings = PipelineSettings(
        batch_size=8,
        balanced_batches=True,
        cache=False,
        hard_negative_share=0.5,
        hard_negative_min_mm2=2.0,
    )
    evaluation = build_pipeline(table, settings, training=False, seed=3, image_size=24)
    sums = np.concatenate(
        [tf.reduce_sum(images, axis=(1, 2, 3)).numpy() for images, _ in evaluation.dataset]
    )
    larger_sums = set(sums[larger].tolist())
    assert not larger_sums & set(sums[~larger].tolist())
    pipeline = build_pipeline(table, settings, training=True, seed=3, image_size=24)
    for images, _ in pipeline.dataset.take(4):
        batch = tf.reduce_sum(images, axis=(1, 2, 3)).numpy().tolist()
        assert sum(s in larger_sums for s in batch) == 2

    above = PipelineSettings(**{**settings.__dict__, "hard_negative_min_mm2": 50.0})
    with pytest.raises(ValueError, match=r"candidate_mm2 >= 50\.0"):
        build_pipeline(table, above, training=True, seed=3)
    with pytest.raises(ValueError, match="at least the Agatston minimum"):
        PipelineSettings(hard_negative_min_mm2=0.5)

    # Tiers: a quarter of the no_calcium turns noise-sized (1-2 mm^2), a quarter larger.
    tiers = PipelineSettings(
        **{
            **settings.__dict__,
            "hard_negative_share": (0.25, 0.25),
            "hard_negative_min_mm2": (1.0, 2.0),
        }
    )
    smaller = hard_negatives(table, 1.0, 2.0)
    assert np.flatnonzero(smaller).tolist() == every[::2].tolist()
    smaller_sums = set(sums[smaller].tolist())
    pipeline = build_pipeline(table, tiers, training=True, seed=3, image_size=24)
    for images, labels in pipeline.dataset.take(4):
        batch = tf.reduce_sum(images, axis=(1, 2, 3)).numpy().tolist()
        assert labels.numpy().tolist().count(1) == 4
        assert sum(s in larger_sums for s in batch) == 1
        assert sum(s in smaller_sums for s in batch) == 1
    with pytest.raises(ValueError, match="as many tiers"):
        PipelineSettings(hard_negative_share=(0.1, 0.2), hard_negative_min_mm2=1.0)
    with pytest.raises(ValueError, match="must ascend"):
        PipelineSettings(hard_negative_share=(0.1, 0.2), hard_negative_min_mm2=(3.0, 1.0))
    with pytest.raises(ValueError, match=r"within 0\.\.1 \(together\)"):
        PipelineSettings(hard_negative_share=(0.6, 0.6), hard_negative_min_mm2=(1.0, 3.0))


def test_balanced_turns_give_each_tier_its_count():
    """Per period of the batches' turns: calcium every other turn, and of the no_calcium
    turns each tier exactly its share, never two hard turns in a row at these shares."""
    areas = np.repeat([0.0, 0.0, 1.5, 5.0], 10).astype(np.float32)  # calcium, plain, tiers
    labels = np.repeat([1, 0, 0, 0], 10)
    n = len(labels)
    table = ImageTable(
        tuple(map(str, range(n))), labels, ("P",) * n, np.ones(n, np.float32), ("",) * n, areas
    )

    def turns(share, min_mm2):
        settings = PipelineSettings(hard_negative_share=share, hard_negative_min_mm2=min_mm2)
        groups, pattern = _balanced_turns(table, settings.hard_negative_tiers())
        assert not pattern[::2].any()  # calcium every other turn
        return groups, pattern[1::2]

    groups, negative = turns((0.1, 0.25), (1.0, 3.0))
    assert [np.unique(areas[g]).tolist() for g in groups[2:]] == [[1.5], [5.0]]
    assert (len(negative), *np.bincount(negative)[1:].tolist()) == (20, 13, 2, 5)
    assert not (np.diff(np.flatnonzero(negative > 1)) == 1).any()
    for k in range(0, 101, 7):  # one tier: exactly the share, as a fraction of hundredths
        share = Fraction(k, 100)
        _, negative = turns(k / 100, 1.0)
        assert len(negative) == share.denominator and (negative == 2).sum() == share.numerator
    groups, negative = turns((0.0, 0.3), (1.0, 3.0))  # a tier of share 0 stays plain
    assert set(np.flatnonzero(areas == 1.5)) <= set(groups[1]) and negative.max() == 2

    PipelineSettings(hard_negative_share=[0.33, 0.56, 0.11], hard_negative_min_mm2=[1, 2, 3])
    with pytest.raises(ValueError, match="use hundredths"):
        PipelineSettings(
            hard_negative_share=(1 / 97, 1 / 89, 1 / 83), hard_negative_min_mm2=(1, 2, 3)
        )


@pytest.mark.parametrize("method", ["area", "max"])
def test_training_sees_images_resized_as_evaluation_does(segmented, method):
    """On-the-fly augmentation works at the stored size and resizes afterwards: with no
    transform drawn, a training image must be the evaluation image of the same file (up to
    the cache's 8-bit rounding), so the network is judged on what it learned from."""
    root, rows, _, _, _ = segmented
    table = image_table(rows, root, SPLIT, "train")
    settings = PipelineSettings(on_the_fly=True, batch_size=len(table), resize=method)
    still = AugmentSettings(
        rotation_deg=0, shear_deg=0, zoom=0, horizontal_flip=False, width_shift=0, height_shift=0
    )
    size = 24
    train = build_pipeline(table, settings, True, 1, still, image_size=size)
    evaluation = build_pipeline(table, settings, False, 1, image_size=size)
    trained = next(iter(train.dataset))[0].numpy()
    evaluated = np.concatenate([x.numpy() for x, _ in evaluation.dataset])
    assert trained.shape == evaluated.shape == (len(table), size, size, 3)
    for image in trained:
        assert np.abs(evaluated - image).max(axis=(1, 2, 3)).min() <= 0.5 / 255 + 1e-6


def test_max_resize_keeps_a_small_lesion_bright():
    """Calcium of 3 x 3 stored pixels on a 299 px slice: averaging to 75 px dims it, the
    max resize keeps its grey level."""
    image = np.full((299, 299, 1), 60, np.uint8)
    image[150:153, 100:103] = 250
    area = model_resize(tf.constant(image), 75, "area").numpy()
    brightest = model_resize(tf.constant(image), 75, "max").numpy()
    assert brightest.shape == area.shape == (75, 75, 1)
    assert brightest.max() == pytest.approx(250, abs=1)
    assert area.max() < 200
    assert np.median(brightest) == pytest.approx(60, abs=1)  # the background stays as it was
    with pytest.raises(ValueError, match="resize must be one of"):
        PipelineSettings(resize="bicubic")
    # A slab's channels (neighbouring slices) shrink each on its own: the lesion on the
    # middle slice stays bright there only.
    slab = np.concatenate([np.full_like(image, 60), image, np.full_like(image, 60)], axis=-1)
    for method in ("area", "max"):
        shrunk = model_resize(tf.constant(slab), 75, method).numpy()
        alone = model_resize(tf.constant(image), 75, method).numpy()[..., 0]
        np.testing.assert_allclose(shrunk[..., 1], alone, atol=1e-4)
        np.testing.assert_allclose(shrunk[..., [0, 2]], 60, atol=1e-3)


def test_slab_images_reach_the_model_as_stored(segmented, tmp_path):
    """RGB images (datasets.slab 3: neighbouring slices as channels) are fed channel for
    channel, in evaluation and in on-the-fly training alike, and augmented channel by
    channel exactly as a grey image is; a model of other channels refuses them."""
    root, rows, augmented_root, _, augmented = segmented
    rgb_root = tmp_path / "rgb"
    for row in rows:
        grey = np.asarray(tf.io.decode_png(tf.io.read_file(str(root / row["path"]))))[..., 0]
        rgb = np.stack([grey, 255 - grey, grey // 2], axis=-1)
        (rgb_root / row["path"]).parent.mkdir(parents=True, exist_ok=True)
        (rgb_root / row["path"]).write_bytes(png_bytes(rgb, 1))
        if row["lesion_mask"]:
            (rgb_root / row["lesion_mask"]).parent.mkdir(exist_ok=True)
            shutil.copy(root / row["lesion_mask"], rgb_root / row["lesion_mask"])
    table = image_table(rows, rgb_root, SPLIT, "train")
    stored = (
        np.stack([np.asarray(tf.io.decode_png(tf.io.read_file(f))) for f in table.files]).astype(
            np.float32
        )
        / 255
    )
    evaluated = np.concatenate(
        [x.numpy() for x, _ in build_pipeline(table, PipelineSettings(), False, 1).dataset]
    )
    np.testing.assert_allclose(evaluated, stored, atol=1e-6)
    still = AugmentSettings(
        rotation_deg=0, shear_deg=0, zoom=0, horizontal_flip=False, width_shift=0, height_shift=0
    )
    settings = PipelineSettings(on_the_fly=True, batch_size=len(table))
    trained = next(iter(build_pipeline(table, settings, True, 1, still).dataset))[0].numpy()
    assert trained.shape == stored.shape
    for image in trained:
        assert np.abs(stored - image).max(axis=(1, 2, 3)).min() <= 0.5 / 255 + 1e-6

    # The same draws as the grey images' augmentation: each channel warped alike.
    out = tmp_path / "augmented"
    augment_dataset(rows, rgb_root, SPLIT, out, AugmentSettings(), 42)
    for row in augmented[:5]:
        with Image.open(out / row["path"]) as image:
            rgb = np.asarray(image)
        with Image.open(augmented_root / row["path"]) as image:
            grey = np.asarray(image)
        assert np.array_equal(rgb[..., 0], grey)
        # The third channel (half the grey) moved with it, up to the interpolation's rounding.
        half = rgb[..., 2].astype(int) - grey.astype(int) // 2
        assert np.abs(half).max() <= 1
    with pytest.raises(ValueError, match="3 channels, but the model takes 1"):
        build_pipeline(table, PipelineSettings(channels=1), False, 1)
