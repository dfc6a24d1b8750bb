"""tf.data input pipelines over the dataset manifests and the patient split table.

One pipeline per (dataset, split). Its file list is built from the manifests and
``results/splits/patients.tsv`` only: the images of the split's patients, plus, for
``train``, the materialized augmented images (whose patients must all be training patients,
else `LeakError`). `InputPipeline.files` is that list, so tests and callers can check that
no validation or test image is read by training.

Design (tf.data performance guide; the 5x target of the input benchmark):

- PNGs are read with ``tf.io`` and decoded once, single-channel, into a uint8 cache;
- on-the-fly augmentation (optional, training only) works on whole batches: ONE projective
  resampling per batch (``ImageProjectiveTransformV3``) with the maps of
  `cacflow.learning.augment.forward_matrices`, instead of one Keras layer per transform;
- labels stay true on the fly as in the materialized augmentation: the source lesion pixels
  (kept per image as a ragged list of coordinates, decoded from ``lesion_mask``) are mapped
  with the same matrices and counted inside the frame;
- grey values become float32 in [0, 1]; a grey image is repeated to the model's channels
  last, an RGB one (``datasets.slab: 3``, neighbouring slices) is fed as stored;
- balanced training batches can draw a share of their ``no_calcium`` half from the hard
  negatives: images that show calcium that is not coronary, or noise (``candidate_mm2`` of
  the manifest, `cacflow.imaging.datasets`). Aortic and valve calcium is in few tiles, so a
  network that sees it rarely learns "bright spot = calcium", and the hybrid score then
  keeps the calcium it should drop.

Random draws are stateless, seeded per batch from ``tf.data.Dataset.random(seed)``, so a
pipeline is reproducible under a seed even with parallel maps.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import tensorflow as tf

from cacflow import settings_from_config
from cacflow.learning.augment import (
    IDENTITY,
    AugmentSettings,
    forward_matrices,
    params_from_uniform,
)
from cacflow.learning.model_file import RESIZE_METHODS
from cacflow.learning.splits import SPLITS, read_splits
from cacflow.scoring.agatston import MIN_AREA_MM2
from cacflow.tables import read_tsv

CLASSES = ("no_calcium", "calcium")  # class index = position
AUTOTUNE = tf.data.AUTOTUNE


class LeakError(ValueError):
    """An image of a validation or test patient would reach training (or a stale table)."""


@dataclass(frozen=True)
class PipelineSettings:
    """Fed from the workflow's ``input_pipeline:`` config section."""

    batch_size: int = 8
    # Validation and prediction batches: no gradients, so larger batches only run faster
    # (probabilities equal up to float rounding).
    eval_batch_size: int = 32
    channels: int = 3  # a grey image is repeated to these at the end (ImageNet networks take 3)
    cache: bool = True  # decoded uint8 images in memory
    # Decoded training images mixed anew each epoch (the file order is shuffled once before).
    shuffle_buffer: int = 1000
    on_the_fly: bool = False  # augment training batches (the materialized ones are added anyway)
    include_augmented: bool = True  # training reads results/augmented/<dataset>/manifest.tsv
    # Training batches half calcium, half not (each class cycled on its own), instead of the
    # natural share: 1-3 % of tiles show calcium, too few per batch to learn from in a
    # short run. Class weights then have nothing left to balance (`class_weights` all 1).
    balanced_batches: bool = False
    # Of the no_calcium half of balanced batches, this share from the hard negatives.
    # A list gives tiers: share k from the images whose candidate area lies from
    # hard_negative_min_mm2[k] up to the next tier's minimum.
    hard_negative_share: float | tuple[float, ...] = 0.0
    # A hard negative shows at least this area of calcium candidates. Noise and partial
    # volume make candidates of 1-3 mm^2; aortic and valve calcium, mostly larger ones.
    hard_negative_min_mm2: float | tuple[float, ...] = MIN_AREA_MM2
    resize: str = "area"  # how images shrink to the model's size (`model_resize`)

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {self.resize!r}")
        for name in ("hard_negative_share", "hard_negative_min_mm2"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):  # hashable, as a frozen dataclass should be
                object.__setattr__(self, name, tuple(float(v) for v in value))
        shares, minima = (
            np.atleast_1d(np.asarray(v, dtype=float))
            for v in (self.hard_negative_share, self.hard_negative_min_mm2)
        )
        if len(shares) != len(minima):
            raise ValueError(
                f"hard_negative_share {self.hard_negative_share} and hard_negative_min_mm2 "
                f"{self.hard_negative_min_mm2} must name as many tiers"
            )
        fractions = _turn_fractions(shares)
        if (shares < 0).any() or (shares > 1).any() or sum(fractions) > 1:
            raise ValueError(
                f"hard_negative_share must be within 0..1 (together), got "
                f"{self.hard_negative_share}"
            )
        if _period(fractions) > MAX_TURN_PERIOD:
            raise ValueError(
                f"hard_negative_share {self.hard_negative_share} repeats only every "
                f"{_period(fractions)} turns: use hundredths"
            )
        if (minima < MIN_AREA_MM2).any():
            raise ValueError(
                f"hard_negative_min_mm2 must be at least the Agatston minimum {MIN_AREA_MM2}, "
                f"got {self.hard_negative_min_mm2}"
            )
        if (np.diff(minima) <= 0).any():
            raise ValueError(
                f"hard_negative_min_mm2 tiers must ascend, got {self.hard_negative_min_mm2}"
            )

    def hard_negative_tiers(self) -> list[tuple[float, float, float]]:
        """(share, min_mm2, below_mm2) of each tier of hard negatives."""
        shares = np.atleast_1d(self.hard_negative_share).tolist()
        minima = np.atleast_1d(self.hard_negative_min_mm2).tolist()
        return list(zip(shares, minima, [*minima[1:], np.inf], strict=True))

    @classmethod
    def from_config(cls, config: Mapping) -> PipelineSettings:
        return settings_from_config(cls, config)


@dataclass(frozen=True)
class ImageTable:
    """What a pipeline reads: one entry per image."""

    files: tuple[str, ...]
    labels: np.ndarray  # int32 class index (CLASSES)
    patients: tuple[str, ...]
    pixel_area_mm2: np.ndarray  # float32, area of one stored pixel
    lesion_masks: tuple[str, ...]  # "" where none
    # Area of calcium candidates each image shows (manifest candidate_mm2); None: unknown.
    candidate_mm2: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class InputPipeline:
    dataset: tf.data.Dataset  # yields (float32 [batch, h, w, channels], int32 [batch])
    table: ImageTable
    class_counts: dict[str, int]  # images of the table per class
    # For model.fit(class_weight=...): inverse frequency of each class in the batches (all 1
    # when the batches are balanced).
    class_weights: dict[int, float]

    @property
    def files(self) -> tuple[str, ...]:
        return self.table.files

    def steps_per_epoch(self, batch_size: int) -> int:
        return -(-len(self.table) // batch_size)


def image_table(
    manifest_rows: Sequence[Mapping],
    dataset_root: Path,
    split_of: Mapping[str, str],
    split: str,
    augmented_rows: Sequence[Mapping] = (),
    augmented_root: Path | None = None,
) -> ImageTable:
    """The images of one split: rows of the split's patients; for ``train`` also the
    augmented rows (all of training patients). Unlabelled rows are left out."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    unknown = sorted({str(r["patient_id"]) for r in manifest_rows} - set(split_of))
    if unknown:
        raise LeakError(f"patients with images but not in the split table: {unknown}")
    entries = [
        (Path(dataset_root), r) for r in manifest_rows if split_of[str(r["patient_id"])] == split
    ]
    if augmented_rows and split != "train":
        raise LeakError(f"augmented images are for training only, not {split}")
    for row in augmented_rows:
        if split_of.get(str(row["patient_id"])) != "train":
            raise LeakError(
                f"augmented image {row['path']} is of {row['patient_id']}, who is not a "
                f"training patient ({split_of.get(str(row['patient_id']), 'no split')})"
            )
        entries.append((Path(augmented_root), row))
    entries = [(root, r) for root, r in entries if r["label"] in CLASSES]

    def joined(root: Path, relative: str) -> str:
        return str(root / relative) if relative else ""

    return ImageTable(
        files=tuple(joined(root, r["path"]) for root, r in entries),
        labels=np.array([CLASSES.index(r["label"]) for _, r in entries], dtype=np.int32),
        patients=tuple(str(r["patient_id"]) for _, r in entries),
        pixel_area_mm2=np.array([float(r["pixel_mm"]) ** 2 for _, r in entries], np.float32),
        lesion_masks=tuple(joined(root, r.get("lesion_mask", "")) for root, r in entries),
        candidate_mm2=np.array(
            [float(r.get("candidate_mm2") or 0.0) for _, r in entries], dtype=np.float32
        ),
    )


def split_table(
    dataset_root: Path,
    splits_path: Path,
    split: str,
    augmented_root: Path | None = None,
) -> ImageTable:
    """`image_table` from the workflow's files: ``<dataset_root>/manifest.tsv``, the split table
    and, for ``train`` with `augmented_root`, ``<augmented_root>/manifest.tsv``."""
    rows = read_tsv(Path(dataset_root) / "manifest.tsv")
    split_of = read_splits(read_tsv(Path(splits_path)))
    augmented = []
    if augmented_root is not None and split == "train":
        augmented = read_tsv(Path(augmented_root) / "manifest.tsv")
    return image_table(rows, dataset_root, split_of, split, augmented, augmented_root)


def class_balance(labels: np.ndarray) -> tuple[dict[str, int], dict[int, float]]:
    """Images per class and balanced class weights (n / (classes x n_class))."""
    counts = np.bincount(np.asarray(labels, dtype=int), minlength=len(CLASSES))
    weights = {
        k: float(len(labels) / (len(CLASSES) * n)) if n else 0.0 for k, n in enumerate(counts)
    }
    return dict(zip(CLASSES, map(int, counts), strict=True)), weights


def build_pipeline(
    table: ImageTable,
    settings: PipelineSettings,
    training: bool,
    seed: int,
    augment: AugmentSettings | None = None,
    image_size: int | None = None,
    repeat: bool = False,
) -> InputPipeline:
    """Batches of (images, labels) from an `ImageTable`. Training shuffles and, with
    ``settings.on_the_fly`` and `augment` given, augments each batch. With `image_size`, images
    reach the model resized to that square side (before the cache, unless augmented on the
    fly, which works in the stored pixels). `repeat` cycles for ever (fixed steps per epoch).
    Training with ``settings.balanced_batches`` alternates the classes image by image (so
    an even batch is exactly half calcium) and always cycles."""
    if len(table) == 0:
        raise ValueError("no images to read")
    height, width, stored = _image_shape(table.files[0])
    if stored not in (1, settings.channels):
        raise ValueError(
            f"{table.files[0]}: {stored} channels, but the model takes {settings.channels} "
            "(input_pipeline.channels; datasets.slab 3 needs 3)"
        )
    on_the_fly = training and settings.on_the_fly and augment is not None
    resize_early = image_size is not None and not on_the_fly and image_size != height
    resize_late = image_size is not None and on_the_fly and image_size != height
    balanced = training and settings.balanced_batches
    counts, weights = class_balance(table.labels)
    if balanced:
        missing = [name for name, n in counts.items() if n == 0]
        if missing:
            raise ValueError(f"balanced batches need images of both classes; none of {missing}")
        weights = {k: 1.0 for k in weights}

    def load(path, label, area, mask_path, can_augment):
        # As stored, so a grey image among RGB ones (or the reverse) fails, not converted.
        image = tf.io.decode_png(tf.io.read_file(path))
        image = tf.ensure_shape(image, (height, width, stored))
        if resize_early:
            image = _resized_uint8(image, image_size, settings.resize)
        if not on_the_fly:
            return image, label
        points = tf.cond(
            tf.strings.length(mask_path) > 0,
            lambda: tf.cast(
                tf.where(tf.io.decode_png(tf.io.read_file(mask_path), channels=1)[..., 0] > 127),
                tf.float32,
            ),
            lambda: tf.zeros((0, 2), tf.float32),
        )
        return image, label, area, points, can_augment

    def decoded(index: np.ndarray, stream_seed: int) -> tf.data.Dataset:
        """The images `index` of the table, decoded (and cached); shuffled when training."""
        has_mask = np.array([bool(table.lesion_masks[i]) for i in index], dtype=bool)
        labels = table.labels[index]
        # A calcium image without a lesion mask cannot be relabelled: it is never transformed.
        augmentable = (labels == 0) | has_mask
        sources = tf.data.Dataset.from_tensor_slices(
            (
                [table.files[i] for i in index],
                labels,
                table.pixel_area_mm2[index],
                [table.lesion_masks[i] for i in index],
                augmentable,
            )
        )
        if training:
            # The file entries (cheap) in one fixed random order first; the buffer below then
            # mixes decoded images anew each epoch. A buffer over the files in manifest order
            # would have to decode `shuffle_buffer` images before the first batch.
            sources = sources.shuffle(len(index), seed=stream_seed, reshuffle_each_iteration=False)
        ds = sources.map(load, num_parallel_calls=AUTOTUNE)
        if settings.cache:
            ds = ds.cache()
        if training:
            ds = ds.shuffle(min(settings.shuffle_buffer, len(index)), seed=stream_seed)
        return ds

    if balanced:
        # Each class cycles on its own: the few calcium images come round again and again,
        # the many others go by once per pass over them.
        groups, pattern = _balanced_turns(table, settings.hard_negative_tiers())
        used = sorted(set(pattern.tolist()))
        streams = [decoded(groups[k], seed + k).repeat() for k in used]
        turns = tf.data.Dataset.from_tensor_slices(np.searchsorted(used, pattern)).repeat()
        ds = tf.data.Dataset.choose_from_datasets(streams, turns)
    else:
        ds = decoded(np.arange(len(table)), seed)
        if repeat:
            ds = ds.repeat()
    if on_the_fly:
        ds = ds.ragged_batch(settings.batch_size)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        ds = ds.map(
            lambda batch, pair: _augment_batch(batch, pair, augment, height, width, settings),
            num_parallel_calls=AUTOTUNE,
        )
        if resize_late:
            ds = ds.map(
                lambda images, labels: (
                    model_resize(images, image_size, settings.resize),
                    labels,
                ),
                num_parallel_calls=AUTOTUNE,
            )
    else:
        ds = ds.batch(settings.batch_size if training else settings.eval_batch_size)
        ds = ds.map(
            lambda images, labels: (_to_model(images, settings.channels), labels),
            num_parallel_calls=AUTOTUNE,
        )
    ds = ds.prefetch(AUTOTUNE)
    return InputPipeline(ds, table, counts, weights)


def hard_negatives(
    table: ImageTable, min_mm2: float = MIN_AREA_MM2, below_mm2: float = np.inf
) -> np.ndarray:
    """Which images are hard negatives: no_calcium, showing at least `min_mm2` (and less
    than `below_mm2`) of calcium candidates."""
    if table.candidate_mm2 is None:
        return np.zeros(len(table), dtype=bool)
    area = table.candidate_mm2
    return (table.labels == CLASSES.index("no_calcium")) & (area >= min_mm2) & (area < below_mm2)


# Balanced batches repeat their pattern of turns every lcm of the shares' denominators.
MAX_TURN_PERIOD = 10_000


def _turn_fractions(shares) -> list[Fraction]:
    """Each share as the fraction of no_calcium turns it takes (denominator <= 100)."""
    return [Fraction(float(share)).limit_denominator(100) for share in shares]


def _period(fractions: Sequence[Fraction]) -> int:
    return math.lcm(1, *(fraction.denominator for fraction in fractions))


def _balanced_turns(
    table: ImageTable, tiers: Sequence[tuple[float, float, float]] = ()
) -> tuple[list[np.ndarray], np.ndarray]:
    """The image groups of balanced batches (calcium, other no_calcium, then each tier of
    hard negatives: `PipelineSettings.hard_negative_tiers`) and one period of the group each
    image comes from: calcium every other image, and of the no_calcium turns exactly each
    tier's share (as a fraction of denominator <= 100), spread evenly."""
    calcium = table.labels == CLASSES.index("calcium")
    plain = ~calcium
    groups, counts = [], []
    for share, min_mm2, below_mm2 in tiers:
        (fraction,) = _turn_fractions([share])
        if fraction == 0:
            continue
        hard = hard_negatives(table, min_mm2, below_mm2)
        if not hard.any():
            shown = f"{min_mm2}" + ("" if np.isinf(below_mm2) else f" and < {below_mm2}")
            raise ValueError(
                f"hard_negative_share {share} needs no_calcium images that show a calcium "
                f"candidate (manifest candidate_mm2 >= {shown}); none among {len(table)}"
            )
        plain &= ~hard
        groups.append(np.flatnonzero(hard))
        counts.append(fraction)
    if sum(counts) < 1 and not plain.any():
        raise ValueError(
            "every no_calcium image is a hard negative: make hard_negative_share add up to 1"
        )
    period = _period(counts)
    counts = [int(fraction * period) for fraction in counts]
    total = sum(counts)
    # Hard where the running count of hard turns, floor(j * total / period), steps up; the
    # tiers take those turns by smooth weighted round robin (each exactly its count).
    credit = [0] * len(counts)
    negative = []
    for j in range(period):
        if (j + 1) * total // period == j * total // period:
            negative.append(1)
            continue
        credit = [c + n for c, n in zip(credit, counts, strict=True)]
        k = int(np.argmax(credit))
        credit[k] -= total
        negative.append(2 + k)
    pattern = np.array([turn for group in negative for turn in (0, group)], dtype=np.int64)
    return [np.flatnonzero(calcium), np.flatnonzero(plain), *groups], pattern


def _image_shape(path: str) -> tuple[int, int, int]:
    """(height, width, channels) of the first image: every image of a dataset has the same."""
    image = tf.io.decode_png(tf.io.read_file(path))
    return tuple(int(n) for n in image.shape)


def model_resize(images: tf.Tensor, size: int, method: str = "area") -> tf.Tensor:
    """Images (height, width, c) or (batch, height, width, c) of a static size, resized to
    size x size as float32, the same way for training, evaluation and prediction.

    "area" averages the pixels each output pixel covers. "max" keeps the brightest of each
    block of the nearest whole factor (4 x 4 from 299 to 75 px, after a resize to 300 that
    moves nothing by more than a pixel): calcium of two or three stored pixels (on a whole
    slice) keeps its grey level, where averaging spreads it into the noise."""
    images = tf.cast(images, tf.float32)
    factor = round(int(images.shape[-3]) / size)
    if method != "max" or factor < 2:
        return tf.image.resize(images, (size, size), method="area")
    batch = images if images.shape.rank == 4 else images[None]
    batch = tf.image.resize(batch, (size * factor, size * factor), method="area")
    pooled = tf.nn.max_pool2d(batch, factor, factor, "VALID")
    return pooled if images.shape.rank == 4 else pooled[0]


def _resized_uint8(image: tf.Tensor, size: int, method: str) -> tf.Tensor:
    """`model_resize` of one uint8 image, kept uint8 for the cache."""
    resized = model_resize(image, size, method)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _to_model(images: tf.Tensor, channels: int) -> tf.Tensor:
    """uint8 or float grey levels to [0, 1], a grey image repeated to `channels`."""
    images = tf.cast(images, tf.float32) * (1.0 / 255.0)
    return tf.repeat(images, channels, axis=-1) if images.shape[-1] != channels else images


def _augment_batch(batch, seed_pair, augment: AugmentSettings, height, width, settings):
    images, labels, areas, points, can_augment = batch
    n = tf.shape(images)[0]
    uniform = tf.random.stateless_uniform((n, 6), seed=seed_pair, dtype=tf.float32)
    params = params_from_uniform(uniform, augment, tf)
    params = tf.where(can_augment[:, None], params, tf.constant(IDENTITY, tf.float32)[None])
    forward = forward_matrices(params, height, width, tf)
    warped = warp_batch(images, forward)
    kept_mm2 = kept_lesion_area_mm2(points, forward, areas, height, width)
    relabel = can_augment & (labels == 1)
    keeps_lesion = tf.cast(kept_mm2 >= augment.min_lesion_area_mm2, tf.int32)
    labels = tf.where(relabel, keeps_lesion, labels)
    return _to_model(warped, settings.channels), labels


def warp_batch(images: tf.Tensor, forward: tf.Tensor) -> tf.Tensor:
    """Images (batch, h, w, c) resampled through the forward maps (batch, 3, 3) in one
    bilinear projective transform; float32 grey levels, black outside the source."""
    height, width = images.shape[1], images.shape[2]
    inverse = tf.linalg.inv(tf.cast(forward, tf.float32))
    transforms = tf.reshape(inverse, (-1, 9))[:, :8] / inverse[:, 2:3, 2]
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=transforms,
        output_shape=[height, width],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )
    return tf.ensure_shape(warped, (None, height, width, images.shape[-1]))


def kept_lesion_area_mm2(
    points: tf.RaggedTensor, forward: tf.Tensor, pixel_area_mm2: tf.Tensor, height, width
) -> tf.Tensor:
    """Per image, the area of its source lesion pixels (ragged (row, col) lists) that the
    forward maps keep inside the frame, as `cacflow.learning.augment.kept_points` counts them."""
    rows = points.value_rowids()
    yx = points.flat_values
    m = tf.gather(tf.cast(forward, tf.float32), rows)
    x = m[:, 0, 0] * yx[:, 1] + m[:, 0, 1] * yx[:, 0] + m[:, 0, 2]
    y = m[:, 1, 0] * yx[:, 1] + m[:, 1, 1] * yx[:, 0] + m[:, 1, 2]
    inside = (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)
    n = tf.shape(forward)[0]
    kept = tf.math.unsorted_segment_sum(tf.cast(inside, tf.float32), rows, n)
    return kept * pixel_area_mm2
