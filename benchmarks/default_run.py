"""Wall time of the default run (`make run`: the built-in synthetic cohort with config.yaml)
on this machine, in two steps: the data (cohort, ingest, segmentation, datasets, scores,
splits, augmentation), then the rest (training, evaluation, figures, report); with each
training job's own time from its benchmark file and summary.

    .venv/bin/python benchmarks/default_run.py [--cores 2] [--workdir DIR] [--record]
        [--label TEXT] [-- SNAKEMAKE_ARGS ...]

Arguments after `--` go to both Snakemake calls (e.g. `--set-threads train_model=1
--resources gpu=2` to train two networks side by side on a CPU). A `--workdir` that holds
the data already skips the first step's work (its time is then Snakemake's check only).
`--record` appends the table to docs/benchmarks.md. Target (issue 5): the whole default run
within 15 minutes on 2 CPU cores.
"""

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, append_section

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TARGET_MIN = 15.0
DATASETS = ("original", "segmented", "cropped")
DATA_TARGETS = [
    "results/qc/series.tsv",
    "results/qc/segmentation.tsv",
    "results/qc/datasets.tsv",
    "results/splits/patients.tsv",
    *(f"results/augmented/{d}/manifest.tsv" for d in DATASETS),
]


def snakemake(workdir: Path, cores: int, targets: list[str], extra: list[str]) -> float:
    cmd = [
        str(SNAKEMAKE), "--snakefile", str(REPO_ROOT / "Snakefile"),
        "--configfile", str(REPO_ROOT / "config.yaml"), "--directory", str(workdir),
        "--cores", str(cores), *targets, *extra,  # options that take lists after the targets
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return seconds


def training_rows(workdir: Path) -> list[dict]:
    path = workdir / "results" / "models" / "summary.tsv"
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def stage_rows(workdir: Path) -> list[tuple[str, int, float, float]]:
    """(folder, jobs, summed s, longest s) per folder of Snakemake benchmark files
    (results/benchmarks/<stage>/...: the rules with a `benchmark:` directive)."""
    rows = []
    root = workdir / "results" / "benchmarks"
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        seconds = []
        for path in sorted(folder.rglob("*.tsv")):
            with open(path, newline="") as handle:
                seconds += [float(row["s"]) for row in csv.DictReader(handle, delimiter="\t")]
        if seconds:
            rows.append((folder.name, len(seconds), sum(seconds), max(seconds)))
    return rows


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the run here (default: a temp dir)")
    parser.add_argument("--label", default="", help="what this run varies, for the table")
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(own)
    with tempfile.TemporaryDirectory(prefix="cacflow-run-") as tmp:
        workdir = args.workdir or Path(tmp)
        data_s = snakemake(workdir, args.cores, DATA_TARGETS, extra)
        rest_s = snakemake(workdir, args.cores, [], extra)
        jobs = training_rows(workdir)
        stages = stage_rows(workdir)
    total_min = (data_s + rest_s) / 60
    lines = [
        "| step | minutes | ratio to the 15-min target |",
        "|---|---:|---:|",
        f"| data (cohort to augmented images) | {data_s / 60:.1f} | {data_s / 60 / TARGET_MIN:.2f} |",
        f"| training, evaluation, report | {rest_s / 60:.1f} | {rest_s / 60 / TARGET_MIN:.2f} |",
        f"| **whole run** | **{total_min:.1f}** | **{total_min / TARGET_MIN:.2f}** |",
        "",
        "| jobs with a benchmark file | jobs | summed s | longest s |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {n} | {total:.0f} | {longest:.0f} |" for name, n, total, longest in stages),
        "",
        "| training job | wall s | training s | train img/s | best val acc |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in sorted(jobs, key=lambda r: -float(r["wall_seconds"])):
        lines.append(
            f"| {row['dataset']}/{row['model']} | {float(row['wall_seconds']):.0f} | "
            f"{float(row['train_seconds']):.0f} | {row['train_images_per_s']} | "
            f"{float(row['best_val_accuracy']):.3f} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.record:
        append_section(
            "default_run",
            f"`snakemake --cores {args.cores}` with config.yaml (the demo preset) on the built-in "
            f"synthetic cohort{'; ' + args.label if args.label else ''}; Snakemake arguments: "
            f"`{' '.join(extra) or 'none'}`",
            table,
            cores_used=f"{args.cores} cores (Snakemake --cores)",
        )


if __name__ == "__main__":
    main()
