"""What every benchmark records with its table: machine, date, command, revision."""

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = REPO_ROOT / "docs" / "benchmarks.md"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        rev = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + (" (uncommitted changes)" if dirty else "")


def command_line() -> str:
    python = Path(sys.executable)
    try:
        python = python.relative_to(REPO_ROOT)
    except ValueError:
        pass
    script = Path(sys.argv[0]).resolve()
    try:
        script = script.relative_to(REPO_ROOT)
    except ValueError:
        pass
    return shlex.join([str(python), str(script), *sys.argv[1:]])


def append_section(name: str, details: str, table: str, cores_used: str = "one") -> None:
    """Append a dated section to docs/benchmarks.md (written whole, then renamed)."""
    now = datetime.datetime.now().astimezone()
    usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    section = "\n".join(
        [
            "",
            f"## {name}: {now:%Y-%m-%d %H:%M %Z}",
            "",
            f"- machine: {cpu_model()}, {os.cpu_count()} cores"
            + (f" ({usable_cores} usable)" if usable_cores else "")
            + f"; the benchmark itself uses {cores_used}",
            f"- command: `{command_line()}`",
            f"- revision: {git_revision()}",
            f"- {details}",
            "",
            table,
            "",
        ]
    )
    existing = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    partial = BENCHMARKS_MD.with_name(BENCHMARKS_MD.name + ".part")
    partial.write_text(existing.rstrip("\n") + "\n" + section)
    os.replace(partial, BENCHMARKS_MD)
    print(f"appended to {BENCHMARKS_MD.relative_to(REPO_ROOT)}", file=sys.stderr)


# Synthetic cohorts of the agreement benchmarks ------------------------------------------
def add_cohort_arguments(parser, patients: int, seed: int) -> None:
    """--patients, --seed, --size, --pixel-spacing, --slice-thickness of a synthetic cohort."""
    parser.add_argument(
        "--patients", type=int, default=patients, help=f"patients (default {patients})"
    )
    parser.add_argument("--seed", type=int, default=seed, help=f"cohort seed (default {seed})")
    parser.add_argument("--size", type=int, default=512, help="pixels per side (default 512)")
    parser.add_argument(
        "--pixel-spacing", type=float, nargs=2, default=(0.5, 0.8), metavar=("MIN", "MAX")
    )
    parser.add_argument("--slice-thickness", type=float, nargs="+", default=(3.0,))


def cohort_settings(parser, args):
    """The `SynthSettings` of `add_cohort_arguments`' options (a parser error for < 2)."""
    from cacflow.synthetic.synth import SynthSettings

    if args.patients < 2:
        parser.error("--patients must be at least 2")
    return SynthSettings(
        seed=args.seed,
        size=args.size,
        pixel_spacing_mm=tuple(args.pixel_spacing),
        slice_thickness_mm=tuple(args.slice_thickness),
    )


def cohort_details(args, settings) -> str:
    """The cohort in words, for a record."""
    return (
        f"{args.patients} synthetic patients, seed {args.seed}, {args.size} px, pixels "
        f"{args.pixel_spacing[0]}-{args.pixel_spacing[1]} mm at 512 px, slices "
        f"{'/'.join(f'{t:g}' for t in args.slice_thickness)} mm, Gaussian noise "
        f"{settings.noise_sd_hu:g} HU"
    )


def score_cohort(args, prefix: str, score, describe) -> tuple[list[dict], float]:
    """`score(cohort_dir, patient_id)` for each of the `--patients` patients in a temporary
    folder, printing `describe(row)` after each; the rows and the seconds they took."""
    import tempfile
    import time

    from cacflow.patients import synthetic_patient_ids

    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        for pid in synthetic_patient_ids(args.patients):
            rows.append(score(Path(tmp), pid))
            print(f"{pid}: {describe(rows[-1])}", flush=True)
    return rows, time.perf_counter() - start


def add_run_arguments(parser) -> None:
    """The finished run whose networks a benchmark looks at (`trained_networks`)."""
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--dataset", default="cropped")
    parser.add_argument("--models", nargs="+", help="default: every trained network")
    parser.add_argument("--splits", nargs="+", default=["validation", "test"])
    parser.add_argument(
        "--external", action="store_true", help="the run's external cohort instead of --splits"
    )


def trained_networks(args) -> tuple[Path, list[dict], list[Path]]:
    """The dataset's folder (of the external cohort with --external), its manifest rows and
    the model folders of the run's networks (`add_run_arguments`)."""
    from cacflow.tables import read_tsv

    results = args.workdir / "results"
    root = (results / "external" if args.external else results) / "datasets" / args.dataset
    models = results / "models" / args.dataset
    folders = sorted(p.parent for p in models.glob("*/model.keras"))
    if args.models:
        folders = [f for f in folders if f.name in args.models]
    return root, read_tsv(root / "manifest.tsv"), folders


def network_predictions(args, folder: Path) -> list[dict]:
    """The predictions of the network in `folder` on the images `trained_networks` names."""
    from cacflow.tables import read_tsv

    if args.external:
        external = args.workdir / "results" / "external" / "predictions" / args.dataset
        return read_tsv(external / f"{folder.name}.tsv")
    return [r for r in read_tsv(folder / "predictions.tsv") if r["split"] in args.splits]


def loaded_networks(args, folders: list[Path]):
    """Per model folder of `trained_networks`: the folder, the model file's preprocessing,
    the loaded model and its `network_predictions`."""
    import keras

    from cacflow.learning.model_file import read_preprocessing

    for folder in folders:
        prep = read_preprocessing(folder / "model.keras")
        model = keras.saving.load_model(folder / "model.keras")
        yield folder, prep, model, network_predictions(args, folder)


def run_images_details(args) -> str:
    """What a benchmark over `trained_networks` looked at, for its record."""
    patients = "external cohort's" if args.external else f"{' and '.join(args.splits)}"
    return (
        f"run {args.workdir}, {args.dataset} networks, the true-positive calcium images "
        f"(P >= 0.5) of its {patients} patients"
    )
