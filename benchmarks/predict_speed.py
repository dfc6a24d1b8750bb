"""Seconds per 56-slice study through `cacflow predict` on the CPU, split by stage, for one
model per dataset kind (original, segmented, cropped).

The study is a synthetic patient at 512 px with 2.5 mm slices (the first of seed 2021 with
56 slices, the paper's count). Each model is scored by the command line in a fresh process,
as a user runs it; the stage seconds come from its prediction.json (`cacflow.predict`):
model (load and checks), read (ingest), segmentation, images (the three datasets written,
as the workflow does), classifier (every image of the model's kind, batches of 32), scoring
(classical and hybrid), overlay; `process` is the whole command, Python and TensorFlow
imports included.

Without `--models`, the models are the network of `--network` with random weights at each
`--image-size`, saved with the preprocessing of config.yaml's ``datasets:`` section (what
`cacflow.learning.model_file.save_model` stores): speed does not depend on the weights, so no training
is needed. `--models` takes trained model.keras files instead.

    .venv/bin/python benchmarks/predict_speed.py [--network resnet50] [--image-size 75 299]
        [--models M.keras ...] [--record]

`--record` appends the table to docs/benchmarks.md.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import REPO_ROOT, append_section

from cacflow.synthetic.synth import SynthSettings, simulate_patient, synth_patient

STAGES = ("model", "read", "segmentation", "images", "classifier", "scoring", "overlay")
SETTINGS = SynthSettings(size=512, slice_thickness_mm=(2.5,))
N_SLICES = 56


def study_with(n_slices: int, settings: SynthSettings) -> str:
    """The first synthetic patient of `settings` with `n_slices` slices."""
    for index in range(1, 1000):
        pid = f"SYN{index:04d}"
        if simulate_patient(pid, settings, slices=[]).acquisition.n_slices == n_slices:
            return pid
    raise SystemExit(f"no synthetic patient with {n_slices} slices")


def untrained_models(work: Path, network: str, sizes: list[int]) -> list[Path]:
    """A cacflow model file per dataset kind and input size, random weights."""
    import keras

    from cacflow.imaging.datasets import DATASETS
    from cacflow.learning.model_file import Preprocessing, save_model
    from cacflow.learning.models import build_model

    datasets = yaml.safe_load((REPO_ROOT / "config.yaml").read_text())["datasets"]
    paths = []
    for size in sizes:
        keras.utils.set_random_seed(0)
        model = build_model(network, (size, size, 3))
        for kind in DATASETS:
            path = work / "models" / kind / f"{network}_{size}" / "model.keras"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_model(model, path, Preprocessing(kind, network, size, 3, datasets))
            paths.append(path)
        keras.backend.clear_session()
    return paths


def run_cli(model: Path, study: Path, out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "cacflow.cli", "predict", "--model", str(model), str(study)]
        + ["--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"cacflow predict exited {proc.returncode}:\n{proc.stderr}")
    return json.loads((out / "prediction.json").read_text()), seconds


def markdown_table(rows: list[tuple[dict, float]]) -> str:
    lines = [
        "| dataset | network | input px | images | "
        + " | ".join(STAGES)
        + " | total | process | classifier images/s |",
        "|---|---|---:|---:|" + "---:|" * (len(STAGES) + 3),
    ]
    for record, process_s in rows:
        seconds = record["seconds"]
        n_images = record["study"]["n_images"]
        rate = n_images / seconds["classifier"] if seconds["classifier"] else 0.0
        lines.append(
            f"| {record['preprocessing']['dataset']} | {record['model']['network']} | "
            f"{record['preprocessing']['image_size']} | {n_images} | "
            + " | ".join(f"{seconds[stage]:.2f}" for stage in STAGES)
            + f" | {seconds['total']:.2f} | {process_s:.2f} | {rate:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", type=Path, help="trained model.keras files")
    parser.add_argument("--network", default="resnet50", help="untrained network (resnet50)")
    parser.add_argument(
        "--image-size", type=int, nargs="+", default=[75, 299], help="input sides (75 299)"
    )
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cacflow-bench-") as tmp:
        work = Path(tmp)
        pid = study_with(N_SLICES, SETTINGS)
        synth_patient(work / "cohort", pid, SETTINGS)
        study = work / "cohort" / "dicom" / pid
        models = args.models or untrained_models(work, args.network, args.image_size)
        rows = []
        for k, model in enumerate(models):
            rows.append(run_cli(model, study, work / "out" / str(k)))
            print(markdown_table(rows[-1:]).splitlines()[-1], file=sys.stderr)
    table = markdown_table(rows)
    print(table)
    if args.record:
        origin = "trained models given" if args.models else "random weights, config.yaml datasets"
        append_section(
            "predict_speed",
            f"study {pid}: {N_SLICES} slices, 512 px, 2.5 mm, Gaussian noise; "
            f"one `cacflow predict` process per model ({origin}); seconds per stage from "
            "prediction.json, `process` = the whole command with imports",
            table,
            cores_used="all (TensorFlow's default thread pools)",
        )


if __name__ == "__main__":
    main()
