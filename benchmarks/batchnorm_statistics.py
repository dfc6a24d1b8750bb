"""What the images that BatchNormalization's inference statistics are recomputed from do to
a trained network: a finished run's cropped network, its statistics recomputed from
training images in their natural class shares (`training.batchnorm_source: natural`) or
from balanced, augmented training batches (`training`), 16 and 128 batches each, scored on
the run's validation and test images (the tuning patients).

    .venv/bin/python benchmarks/batchnorm_statistics.py --results RUN/results
        [--model resnet50] [--configfile config/cpu.yaml config/cpu_cropped.yaml] [--record]

Per row: image AUC, balanced accuracy, sensitivity and specificity at 0.5, and how many
images get P(calcium) = 1 to six decimals (saturated, tied in the ROC).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import append_section
from sklearn.metrics import roc_auc_score
from train_ablation import config_with

from cacflow.learning.augment import AugmentSettings
from cacflow.learning.inputs import PipelineSettings, build_pipeline, split_table
from cacflow.learning.model_file import load_classifier, model_preprocessing
from cacflow.learning.training import (
    TrainSettings,
    recompute_batchnorm_statistics,
    statistics_batches,
)

DATASET = "cropped"


def evaluate(model, tables, pipeline: PipelineSettings, image_size: int) -> dict:
    labels, probabilities = [], []
    for table in tables:
        data = build_pipeline(table, pipeline, training=False, seed=0, image_size=image_size)
        probabilities.append(model.predict(data.dataset, verbose=0)[: len(table), 1])
        labels.append(table.labels)
    y, p = np.concatenate(labels) == 1, np.concatenate(probabilities)
    called = p > 0.5
    sensitivity, specificity = (called & y).sum() / y.sum(), (~called & ~y).sum() / (~y).sum()
    return {
        "auc": roc_auc_score(y, p),
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "saturated": int((np.round(p, 6) >= 1.0).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument(
        "--configfile",
        type=Path,
        nargs="*",
        default=[Path("config/cpu.yaml"), Path("config/cpu_cropped.yaml")],
    )
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    config = config_with(args.configfile, [])
    settings = TrainSettings.from_config(config["training"], args.model)
    pipeline = PipelineSettings.from_config(config["input_pipeline"])
    augment = AugmentSettings.from_config(config["augmentation"])
    results, seed = args.results, config["seed"]
    model_path = results / "models" / DATASET / args.model / "model.keras"
    prep = model_preprocessing(model_path)
    root, splits = results / "datasets" / DATASET, results / "splits" / "patients.tsv"
    train = split_table(root, splits, "train", results / "augmented" / DATASET)
    tuning = [split_table(root, splits, split) for split in ("validation", "test")]

    rows = [
        (
            "as saved by the run",
            evaluate(load_classifier(model_path, prep), tuning, pipeline, settings.image_size),
        )
    ]
    for source in ("natural", "training"):
        for n in (16, 128):
            model = load_classifier(model_path, prep)
            chosen = replace(settings, batchnorm_batches=n, batchnorm_source=source)
            batches = statistics_batches(train, chosen, pipeline, seed, augment)
            recompute_batchnorm_statistics(model, batches)
            rows.append(
                (f"{source}, {n} batches", evaluate(model, tuning, pipeline, settings.image_size))
            )
    n_images = sum(len(t) for t in tuning)
    lines = [
        "| statistics from | image AUC | balanced accuracy | sensitivity | specificity | P(calcium) = 1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['auc']:.4f} | {r['balanced_accuracy']:.3f} | {r['sensitivity']:.3f} "
            f"| {r['specificity']:.3f} | {r['saturated']} of {n_images} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.record:
        details = (
            f"{DATASET}/{args.model} of {results} (trained with batchnorm_source "
            f"{settings.batchnorm_source}), scored on that run's validation and test images"
        )
        append_section("batchnorm_statistics", details, table, cores_used="all")


if __name__ == "__main__":
    main()
