"""Training images/s per network and input size on this machine: a plain Keras fit on random
tensors in memory beside the same fit fed by cacflow's tf.data pipeline from PNGs (decode,
resize, cache), in one run on the same cores; and inference ms/image (batch 1 and 32, the
paper's Table 1 measure), with mixed precision compared where a GPU is present.

    .venv/bin/python benchmarks/train_speed.py [--sizes 128 299] [--models ...] [--record]

Each measurement: one warm-up epoch (builds the graphs), then `--steps` timed batches of 8
with SGD (momentum 0.9, weight decay 0.005) as in training. `--record` appends the table to
docs/benchmarks.md.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from _common import append_section
from scipy import ndimage

from cacflow.imaging.png import png_bytes
from cacflow.learning.inputs import ImageTable, PipelineSettings, build_pipeline
from cacflow.learning.models import build_model
from cacflow.learning.training import gpu_present, inference_ms

BATCH = 8


def make_table(folder: Path, n: int, size: int = 299) -> ImageTable:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        grey = np.clip(
            128 + 900 * ndimage.gaussian_filter(rng.normal(size=(size, size)), 6), 0, 255
        )
        path = folder / f"img{i:03d}.png"
        path.write_bytes(png_bytes(grey.astype(np.uint8), 1))
        files.append(str(path))
    return ImageTable(
        files=tuple(files),
        labels=(np.arange(n) % 2).astype(np.int32),
        patients=tuple("P" for _ in files),
        pixel_area_mm2=np.ones(n, np.float32),
        lesion_masks=tuple("" for _ in files),
    )


def compiled(name: str, size: int) -> keras.Model:
    model = build_model(name, (size, size, 3))
    model.compile(
        optimizer=keras.optimizers.SGD(0.001, momentum=0.9, weight_decay=0.005),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def images_per_s(model: keras.Model, data, steps: int) -> float:
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # builds the graph
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * BATCH / (time.perf_counter() - start)


def measure(name: str, size: int, table: ImageTable, steps: int, mixed: bool) -> dict:
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).random((BATCH * 4, size, size, 3), dtype=np.float32)
    y = np.arange(BATCH * 4) % 2
    tensors = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).repeat()
    model = compiled(name, size)
    random_ips = images_per_s(model, tensors, steps)
    settings = PipelineSettings(batch_size=BATCH, cache=True)
    pipeline = build_pipeline(table, settings, training=True, seed=0, image_size=size, repeat=True)
    pipeline_ips = images_per_s(compiled(name, size), pipeline.dataset, steps)
    timing = inference_ms(model, (size, size, 3))
    return {
        "model": name,
        "size": size,
        "mixed": mixed,
        "random": random_ips,
        "pipeline": pipeline_ips,
        **timing,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 299])
    parser.add_argument(
        "--models", nargs="+", default=["resnet50", "inception_resnet_v2", "vgg16", "vgg19"]
    )
    parser.add_argument("--steps", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    on_gpu = gpu_present()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cacflow-bench-") as tmp:
        table = make_table(Path(tmp), 48)
        for size in args.sizes:
            for name in args.models:
                for mixed in (False, True) if on_gpu else (False,):
                    row = measure(name, size, table, args.steps, mixed)
                    rows.append(row)
                    print(row, flush=True)
    header = (
        "| network | input px | mixed precision | img/s, random tensors | img/s, tf.data from PNG "
        "| ratio | inference ms/img, batch 1 | batch 32 |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']} | {'yes' if r['mixed'] else 'no'} | {r['random']:.1f} "
            f"| {r['pipeline']:.1f} | {r['pipeline'] / r['random']:.2f} "
            f"| {r['inference_ms_batch1']:.1f} | {r['inference_ms_batch32']:.1f} |"
        )
    table_md = "\n".join(lines)
    print(table_md)
    if args.record:
        append_section(
            "Training speed per network (CPU)" if not on_gpu else "Training speed per network",
            "Batches of 8, SGD as in training; one warm-up fit builds the graphs before "
            f"{args.steps} timed batches. 'random tensors': a Keras fit on arrays in memory "
            "(the reference the issue quotes); 'tf.data from PNG': the same fit fed by "
            "cacflow.learning.inputs (decode, resize, cache) from 299 px PNGs. Inference: forward "
            "passes after warm-up (the paper: 24 ms/image, ResNet50 on an RTX 2080).",
            table_md,
            cores_used=f"all {os.cpu_count()} (TensorFlow threads)",
        )


if __name__ == "__main__":
    main()
