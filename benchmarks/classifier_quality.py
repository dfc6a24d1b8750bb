"""How well the trained networks detect calcium on an external cohort: a preset's whole run
(the training cohort of config.yaml, a preset on top) with an external synthetic cohort of
another seed and acquisition, then the table of results/external/metrics.tsv beside the
paper's Table 3, with the hybrid and classical Agatston scores on that cohort.

    .venv/bin/python benchmarks/classifier_quality.py [--preset config/cpu.yaml [config/cpu_cropped.yaml]]
        [--patients 24] [--seed 7001 | --fresh] [--workdir DIR] [--record] [-- SNAKEMAKE_ARGS ...]

Two Snakemake calls, each timed: the preset's own run (`rule all`, report included), then
the external cohort's steps added to it. Without a GPU, two trainings run side by side on
half the cores each, as `make run` does. A `--workdir` that holds a finished run reruns
only what the preset changes. `--fresh` draws the external cohort's seed from the clock,
one never used (`benchmarks/used_seeds.tsv`), for a confirmation nobody could tune to.
`--record` appends the table to docs/benchmarks.md.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, append_section
from _seeds import draw_fresh_seeds

from cacflow.tables import read_tsv

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TARGETS = (
    "results/metrics.tsv",
    "results/external/metrics.tsv",
    "results/external/table3.tsv",
    "results/external/agatston/agreement.tsv",
    "results/external/gradcam_pointing.tsv",
)


def snakemake(workdir: Path, configfiles: list[Path], targets: list[str], extra: list[str]):
    """Seconds of one Snakemake call (exits with its stderr when it fails)."""
    cores = os.cpu_count() or 2
    cmd = [
        str(SNAKEMAKE), "--snakefile", str(REPO_ROOT / "Snakefile"),
        "--configfile", *map(str, configfiles), "--directory", str(workdir),
        "--cores", str(cores), *targets,  # before the options that take lists
        "--resources", "gpu=2", "--set-threads", f"train_model={max(cores // 2, 1)}", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stderr[-4000:]}")
    return time.perf_counter() - start


def run(
    workdir: Path, presets: list[Path], patients: int, seed: int, extra: list[str]
) -> tuple[float, float]:
    """Seconds of the preset's whole run (its report included), then of the external
    cohort's steps added to it."""
    workdir.mkdir(parents=True, exist_ok=True)
    overlay = workdir / "external.yaml"
    overlay.write_text(f"external:\n  patients: {patients}\n  seed: {seed}\n")
    configfiles = [REPO_ROOT / "config.yaml", *presets]
    own = snakemake(workdir, configfiles, [], extra)
    return own, snakemake(workdir, [*configfiles, overlay], list(TARGETS), extra)


def cell(row: dict, metric: str) -> str:
    value = float(row[metric])
    if math.isnan(value):
        return "n/a"
    return (
        f"{value:.3f} [{float(row[metric + '_ci_low']):.3f}, {float(row[metric + '_ci_high']):.3f}]"
    )


def quality_table(results: Path) -> str:
    internal = {
        (r["dataset"], r["model"]): r
        for r in read_tsv(results / "metrics.tsv")
        if r["split"] == "validation" and r["level"] == "image"
    }
    external = read_tsv(results / "external" / "metrics.tsv")
    paper = {(r["dataset"], r["model"]): r for r in read_tsv(results / "external" / "table3.tsv")}
    lines = [
        (
            "| dataset | network | validation AUC | external image AUC | balanced accuracy | "
            "sensitivity | specificity | accuracy (paper's test) | patient AUC | patient "
            "sensitivity | patient specificity |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    images = [r for r in external if r["level"] == "image"]
    patients = {(r["dataset"], r["model"]): r for r in external if r["level"] == "patient"}
    for r in images:
        key = (r["dataset"], r["model"])
        theirs = paper.get(key, {}).get("paper_accuracy", "")
        theirs = f" ({float(theirs):.3f})" if theirs not in ("", "nan") else ""
        p = patients[key]
        lines.append(
            f"| {key[0]} | {key[1]} | {float(internal[key]['roc_auc']):.3f} | "
            f"{cell(r, 'roc_auc')} | {cell(r, 'balanced_accuracy')} | {cell(r, 'sensitivity')} | "
            f"{cell(r, 'specificity')} | {cell(r, 'accuracy')}{theirs} | {cell(p, 'roc_auc')} | "
            f"{cell(p, 'sensitivity')} | {cell(p, 'specificity')} |"
        )
    jobs = [float(r["wall_seconds"]) for r in read_tsv(results / "models" / "summary.tsv")]
    lines += [
        "",
        (
            f"Training jobs: {len(jobs)}, {sum(jobs) / 60:.1f} min summed, the longest "
            f"{max(jobs) / 60:.1f} min (wall seconds of results/models/summary.tsv)."
        ),
    ]
    pointing = read_tsv(results / "external" / "gradcam_pointing.tsv")
    lines += [
        "",
        (
            "| dataset | network | map | layer (cells) | true-positive calcium images | heat "
            f"within {pointing[0]['radius_mm']} mm of a lesion, mean | median | peak within "
            f"{pointing[0]['radius_mm']} mm | mean, layers above the map random |"
        ),
        "|---|---|---|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r['dataset']} | {r['model']} | {r['method']} | {r['layer']} ({r['map_cells']}) "
            f"| {r['n_images']} | {r['mean_share']} | {r['median_share']} | {r['peak_hit_rate']} "
            f"| {r['random_mean_share']} |"
            for r in pointing
        ),
    ]
    agreement = read_tsv(results / "external" / "agatston" / "agreement.tsv")
    lines += ["", "| method | ICC | linear kappa | category accuracy |", "|---|---|---|---|"]
    for r in agreement:
        lines.append(
            f"| {r['method']} | {r.get('icc', '')} | {r.get('kappa_linear', '')} | "
            f"{r.get('category_accuracy', '')} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--preset",
        type=Path,
        nargs="+",
        default=[],
        help="config overlays in order, e.g. config/cpu.yaml config/cpu_cropped.yaml",
    )
    parser.add_argument("--patients", type=int, default=24, help="external patients (24)")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=7001, help="external cohort seed (7001)")
    seeds.add_argument("--fresh", action="store_true", help="a seed never used, from the clock")
    parser.add_argument("--workdir", type=Path, help="keep the run here (default: a temp dir)")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(own)
    if args.fresh:
        args.seed = draw_fresh_seeds(1, "classifier_quality --fresh")[0]
        print(f"external cohort: fresh seed {args.seed}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="cacflow-quality-") as tmp:
        workdir = args.workdir or Path(tmp)
        # A workdir with trained models is a finished run topped up: its times say nothing.
        reused = (workdir / "results" / "models" / "summary.tsv").exists()
        own, external = run(workdir, args.preset, args.patients, args.seed, extra)
        table = quality_table(workdir / "results")
    print(table)
    if args.record:
        times = (
            "times not measured (a finished run's workdir, only what was missing rerun)"
            if reused
            else f"the preset's whole run (training cohort to report) {own / 60:.1f} min, "
            f"then the external cohort's steps {external / 60:.1f} min"
        )
        details = (
            f"preset: {' + '.join(map(str, args.preset)) or 'config.yaml (the default run)'}; "
            "external cohort: "
            f"{args.patients} synthetic patients of "
            f"{'fresh ' if args.fresh else ''}seed {args.seed} (external: defaults: "
            "0.35-0.45 mm pixels at 512 px, 2.5 mm slices), never trained or tuned on; "
            f"{times}. Values [95 % patient-bootstrap interval]; "
            "validation AUC: the training cohort's validation split; in brackets after our "
            "accuracy: the paper's test accuracy (Table 3). Then the Grad-CAM pointing game "
            "and the Agatston agreement with the external cohort's truth"
        )
        append_section("classifier_quality", details, table, cores_used="all")


if __name__ == "__main__":
    main()
