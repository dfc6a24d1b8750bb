"""Shared fixtures: the repository root and a runner of the real workflow; `make_volume`
for tests that build volumes from constructed arrays."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cacflow.imaging.volume import Volume

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tools of the environment that runs pytest (the project's .venv).
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def venv_bin() -> Path:
    """Folder of the command-line tools (snakemake, snakefmt) beside the running Python."""
    return BIN


@pytest.fixture(scope="session")
def tiny_config(repo_root) -> Path:
    return repo_root / "tests" / "config" / "tiny.yaml"


@pytest.fixture(scope="session")
def run_snakemake(repo_root, tiny_config):
    """Run the repository's workflow in `workdir` (results land there, not in the repository).

    Returns the finished process; fails the test with Snakemake's output when `check` is set
    and the run fails."""

    def run(
        workdir: Path, *args: str, configfile: Path = tiny_config, check: bool = True
    ) -> subprocess.CompletedProcess:
        cmd = [
            str(BIN / "snakemake"),
            "--snakefile", str(repo_root / "Snakefile"),
            "--directory", str(workdir),
            "--configfile", str(configfile),
            "--cores", "2",
            *args,
        ]  # fmt: skip
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if check and proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture
def refused_overlay(tmp_path, run_snakemake, repo_root):
    """Dry-run config.yaml with the YAML text given on top; the run must fail before any job.
    Returns what Snakemake printed."""

    def refuse(overlay_text: str) -> str:
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(overlay_text)
        config = str(repo_root / "config.yaml")
        proc = run_snakemake(
            tmp_path, "--dry-run", "--configfile", config, str(overlay), check=False
        )
        assert proc.returncode != 0
        return proc.stdout + proc.stderr

    return refuse


@pytest.fixture(scope="session")
def mini_datasets(tmp_path_factory) -> Path:
    """The three datasets of two real synthetic patients at 160 px, made by the library as the
    workflow does: SYN0006 (coronary calcium, Agatston > 400) and SYN0001 (none).
    Returns the results folder (datasets/<dataset>/manifest.tsv below it)."""
    return make_datasets(tmp_path_factory.mktemp("mini"), ["SYN0001", "SYN0006"])


# Patients of the learning fixture and their split: three with coronary calcium train (the
# tiny cohort's training split holds one calcium tile: nothing to learn from), one validates.
LEARNING_SPLIT = {
    "SYN0001": "train",  # none
    "SYN0006": "train",  # Agatston 1225
    "SYN0016": "train",  # 804
    "SYN0018": "train",  # 649
    "SYN0003": "validation",  # none
    "SYN0008": "validation",  # 380, 19 lesions
}


@pytest.fixture(scope="session")
def learning_datasets(tmp_path_factory) -> Path:
    """The datasets of the six patients of `LEARNING_SPLIT` (seed 2021, 160 px) and their
    split table, ``splits.tsv`` in the returned results folder."""
    from cacflow.tables import write_tsv

    results = make_datasets(tmp_path_factory.mktemp("learning"), list(LEARNING_SPLIT))
    write_tsv(
        results / "splits.tsv",
        [{"patient_id": pid, "split": split} for pid, split in LEARNING_SPLIT.items()],
        ["patient_id", "split"],
    )
    return results


def make_datasets(root: Path, ids: list[str], size: int = 160) -> Path:
    """Synthesize patients `ids` (seed 2021, `size` px) and make their three datasets in
    ``root/results/datasets/<dataset>``; returns ``root/results``."""
    import io

    from cacflow.pipeline import StudySettings, process_study
    from cacflow.synthetic.synth import SynthSettings, synth_patient
    from cacflow.tables import read_tsv, write_tsv

    cohort, results = root / "cohort", root / "results"
    for pid in ids:
        synth_patient(cohort, pid, SynthSettings(size=size))
        process_study(
            cohort / "dicom" / pid,
            root / pid,
            pid,
            StudySettings(),
            read_tsv(cohort / "labels" / f"{pid}.tsv"),
            cohort / "truth" / f"{pid}.npz",
            log=io.StringIO(),
        )
    for dataset in ("original", "segmented", "cropped"):
        rows = []
        for pid in ids:
            source = root / pid / "datasets" / dataset
            (results / "datasets" / dataset).mkdir(parents=True, exist_ok=True)
            (source / pid).rename(results / "datasets" / dataset / pid)
            rows += read_tsv(source / "manifest.tsv")
        columns = list(rows[0])
        write_tsv(results / "datasets" / dataset / "manifest.tsv", rows, columns)
    return results


def make_volume(hu, instance_numbers, pixel_spacing_mm, slice_spacing_mm) -> Volume:
    """A `Volume` of constructed arrays: slices as thick as their spacing, at 0, s, 2 s, ..."""
    return Volume(
        hu=hu,
        pixel_spacing_mm=pixel_spacing_mm,
        slice_spacing_mm=slice_spacing_mm,
        slice_thickness_mm=slice_spacing_mm,
        instance_numbers=np.asarray(instance_numbers),
        positions_mm=np.arange(len(instance_numbers)) * float(slice_spacing_mm),
    )
