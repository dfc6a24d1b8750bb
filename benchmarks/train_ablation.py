"""One training job of the workflow (`train_classifier`) on a finished run's data, with config
keys changed, scored on the run's validation and test patients: what each training setting
does to learning (docs/benchmarks.md, "Training that learns").

    .venv/bin/python benchmarks/train_ablation.py --results results --out /tmp/abl/base
        [--dataset cropped] [--model resnet50] [--configfile config/cpu.yaml]
        [--set training.optimizer=sgd input_pipeline.balanced_batches=false seed=7 ...]
        [--threads 2] [--record]

`--results` holds the datasets, augmented images and split table of a run (the data
targets of `benchmarks/default_run.py`). Printed (and with `--record` appended to
docs/benchmarks.md): the image ROC AUC on the validation and test images, the slice AUC
(the largest probability of a slice's images), the images called calcium at 0.5, the loss
per epoch and the training time.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import time
from pathlib import Path

import pandas as pd
import yaml
from _common import REPO_ROOT, append_section
from sklearn.metrics import roc_auc_score

from cacflow.learning.augment import AugmentSettings
from cacflow.learning.inputs import PipelineSettings
from cacflow.learning.training import TrainPaths, TrainSettings, train_classifier
from cacflow.overlays import per_model_after_overlays


def merged(base, overlay):
    """`overlay` on `base` key by key, nested mappings too, as Snakemake merges config files."""
    if not (isinstance(base, dict) and isinstance(overlay, dict)):
        return overlay
    return {**base, **{key: merged(base.get(key), value) for key, value in overlay.items()}}


def config_with(configfiles: list[Path], changes: list[str]) -> dict:
    """config.yaml, overlaid with each file, then `section.key=value` (or `key=value` for a
    top-level key such as the training seed), as the workflow overlays config files (the
    changes as one more file)."""
    layers = [yaml.safe_load((REPO_ROOT / "config.yaml").read_text())]
    layers += [yaml.safe_load(Path(path).read_text()) or {} for path in configfiles]
    for change in changes:
        key, value = change.split("=", 1)
        *section, name = key.split(".", 1)
        layer = {name: yaml.safe_load(value)}
        layers.append({section[0]: layer} if section else layer)
    config = {}
    for layer in layers:
        config = merged(config, layer)
    training = config["training"]
    training["per_model"] = per_model_after_overlays(
        training["per_model"], [layer.get("training") or {} for layer in layers]
    )
    return config


def scores(predictions: pd.DataFrame) -> dict:
    calcium = predictions["label"] == "calcium"
    slices = predictions.assign(calcium=calcium).groupby(["patient_id", "slice"])
    per_slice = slices.agg(p=("probability", "max"), y=("calcium", "any"))
    return {
        "image_auc": roc_auc_score(calcium, predictions["probability"]),
        "slice_auc": roc_auc_score(per_slice["y"], per_slice["p"]),
        "images": len(predictions),
        "calcium_images": int(calcium.sum()),
        "called_calcium": int((predictions["probability"] >= 0.5).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results")
    parser.add_argument("--out", type=Path, required=True, help="the job's output folder")
    parser.add_argument("--dataset", default="cropped")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[])
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    config = config_with(args.configfile, args.set)
    results = args.results
    started = time.perf_counter()
    row = train_classifier(
        args.dataset,
        args.model,
        TrainPaths(
            dataset_root=results / "datasets" / args.dataset,
            splits=results / "splits" / "patients.tsv",
            augmented_root=results / "augmented" / args.dataset,
            out_dir=args.out,
            predictions=args.out / "predictions.tsv",
        ),
        TrainSettings.from_config(config["training"], args.model),
        PipelineSettings.from_config(config["input_pipeline"]),
        AugmentSettings.from_config(config["augmentation"]),
        config["datasets"],
        config["seed"],
        threads=args.threads,
    )
    seconds = time.perf_counter() - started
    result = scores(pd.read_csv(args.out / "predictions.tsv", sep="\t"))
    history = pd.read_csv(args.out / "history.csv")
    losses = "; ".join(f"{r.loss:.3f} / {r.val_loss:.3f}" for r in history.itertuples(index=False))
    header = (
        "| changes | image AUC | slice AUC | called calcium at 0.5 | loss / val loss per epoch "
        "| best epoch | training s | job s |"
    )
    row_text = (
        f"| {' '.join(args.set) or 'none'} | {result['image_auc']:.3f} "
        f"| {result['slice_auc']:.3f} | {result['called_calcium']} of {result['images']} "
        f"({result['calcium_images']} calcium) | {losses} | {row['best_epoch']} "
        f"| {row['train_seconds']:.0f} | {seconds:.0f} |"
    )
    table = f"{header}\n|---|---:|---:|---:|---|---:|---:|---:|\n{row_text}"
    print(table)
    if args.record:
        details = (
            f"{args.dataset}/{args.model} trained by train_classifier on {results} with "
            f"config.yaml{''.join(' + ' + str(p) for p in args.configfile)} and the changes "
            "shown; scored on every validation and test image of that run"
        )
        append_section("train_ablation", details, table, cores_used=f"{args.threads} threads")


if __name__ == "__main__":
    main()
