"""Images/s delivered to a model, 299 px, batch 8, with the paper's augmentation: the tf.data
pipeline of cacflow.learning.inputs against Keras ImageDataGenerator.flow_from_dataframe (the paper's
approach; Keras 3 keeps it only in keras.src.legacy.preprocessing.image) and a plain Python
loop (PIL + scipy, the materialized augmentation's code), in one run on the same cores.

All three deliver float32 (8, 299, 299, 3) batches in [0, 1] from the same PNGs (a quarter
with a lesion mask), with rotation, shear, zoom, horizontal flip and width/height shifts.
Target: tf.data >= 5x ImageDataGenerator.

    .venv/bin/python benchmarks/input_pipeline.py [--images 400] [--epochs 3] [--record]

`--record` appends the table to docs/benchmarks.md.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import append_section
from PIL import Image
from scipy import ndimage

from cacflow.imaging.png import png_bytes
from cacflow.learning.augment import (
    AugmentSettings,
    forward_matrices,
    read_grey,
    sample_params,
    warp,
)
from cacflow.learning.inputs import ImageTable, PipelineSettings, build_pipeline

SIZE, BATCH, TARGET_RATIO = 299, 8, 5.0


def make_images(folder: Path, n: int, seed: int = 0) -> ImageTable:
    """Smooth random grey images (CT-like texture) as PNGs; every fourth with a lesion."""
    rng = np.random.default_rng(seed)
    files, masks, labels = [], [], []
    for i in range(n):
        field = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 6)
        grey = np.clip(128 + 900 * field + rng.normal(0, 8, (SIZE, SIZE)), 0, 255)
        path = folder / f"img{i:04d}.png"
        path.write_bytes(png_bytes(grey.astype(np.uint8), 1))
        files.append(str(path))
        mask_path = ""
        if i % 4 == 0:
            r, c = rng.integers(40, SIZE - 40, 2)
            yy, xx = np.ogrid[:SIZE, :SIZE]
            lesion = ((yy - r) ** 2 + (xx - c) ** 2 <= 36).astype(np.uint8) * 255
            mask_path = str(folder / f"mask{i:04d}.png")
            Path(mask_path).write_bytes(png_bytes(lesion, 1))
        masks.append(mask_path)
        labels.append(int(bool(mask_path)))
    return ImageTable(
        files=tuple(files),
        labels=np.array(labels, np.int32),
        patients=tuple("P" for _ in files),
        pixel_area_mm2=np.full(n, 0.1**2, np.float32),
        lesion_masks=tuple(masks),
    )


def time_tf_data(
    table: ImageTable, augment: AugmentSettings, epochs: int, channels: int = 3
) -> list[float]:
    settings = PipelineSettings(batch_size=BATCH, channels=channels, cache=True, on_the_fly=True)
    pipeline = build_pipeline(table, settings, training=True, seed=0, augment=augment)
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        for images, _labels in pipeline.dataset:
            images.numpy()
        seconds.append(time.perf_counter() - start)
    return seconds


def time_image_data_generator(table: ImageTable, augment: AugmentSettings) -> float:
    import pandas as pd
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(
        rescale=1.0 / 255,
        rotation_range=augment.rotation_deg,
        shear_range=augment.shear_deg,
        zoom_range=augment.zoom,
        horizontal_flip=augment.horizontal_flip,
        width_shift_range=augment.width_shift,
        height_shift_range=augment.height_shift,
    )
    frame = pd.DataFrame(
        {"filename": table.files, "label": [str(v) for v in table.labels.tolist()]}
    )
    flow = generator.flow_from_dataframe(
        frame,
        x_col="filename",
        y_col="label",
        target_size=(SIZE, SIZE),
        color_mode="rgb",
        class_mode="binary",
        batch_size=BATCH,
        shuffle=True,
        seed=0,
    )
    start = time.perf_counter()
    for _ in range(len(flow)):
        next(flow)
    return time.perf_counter() - start


def time_python_loop(table: ImageTable, augment: AugmentSettings) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    order = rng.permutation(len(table))
    for first in range(0, len(order), BATCH):
        batch = []
        for index in order[first : first + BATCH]:
            image = read_grey(Path(table.files[index]))
            forward = forward_matrices(sample_params(rng, augment, 1), SIZE, SIZE)[0]
            batch.append(warp(image, forward))
        images = np.stack(batch).astype(np.float32)[..., None] / 255.0
        np.repeat(images, 3, axis=-1)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=5, help="tf.data epochs (1st decodes)")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    augment = AugmentSettings()
    Image.init()
    with tempfile.TemporaryDirectory(prefix="cacflow-bench-") as tmp:
        table = make_images(Path(tmp), args.images)
        n = len(table)
        idg_s = time_image_data_generator(table, augment)
        loop_s = time_python_loop(table, augment)
        tf_s = time_tf_data(table, augment, args.epochs)
        grey_s = time_tf_data(table, augment, args.epochs, channels=1)
    steady = min(tf_s[1:]) if len(tf_s) > 1 else tf_s[0]
    idg_rate = n / idg_s
    rows = [
        ("Keras ImageDataGenerator.flow_from_dataframe (paper)", idg_s),
        ("plain Python loop (PIL + scipy affine)", loop_s),
        ("tf.data, first epoch (decode + cache + augment)", tf_s[0]),
        ("tf.data, later epochs (cached, augment)", steady),
        (
            "tf.data, later epochs, grey batches (the model repeats to RGB)",
            min(grey_s[1:] or grey_s),
        ),
    ]
    lines = [
        "| pipeline | images | seconds | images/s | x ImageDataGenerator |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, seconds in rows:
        lines.append(
            f"| {name} | {n} | {seconds:.2f} | {n / seconds:.0f} | {n / seconds / idg_rate:.1f} |"
        )
    ratio = n / steady / idg_rate
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    summary = (
        f"tf.data (cached, RGB batches as ImageDataGenerator's) is {ratio:.1f}x "
        f"ImageDataGenerator: {verdict} the 5x target. Later epochs: the best of "
        f"{args.epochs - 1}."
    )
    lines += ["", summary]
    table_md = "\n".join(lines)
    print(table_md)
    if args.record:
        details = (
            f"{n} random 299x299 grey PNGs (1 in 4 with a lesion mask), batch {BATCH}, "
            f"float32 RGB batches in [0, 1], the paper's transforms; all cores of the machine"
        )
        append_section("input_pipeline", details, table_md, cores_used="all cores")


if __name__ == "__main__":
    main()
