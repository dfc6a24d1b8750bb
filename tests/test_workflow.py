"""The Snakemake workflow as a user meets it: lint, format, config checks, plan, and a real run
of the tiny synthetic cohort."""

import subprocess

import pandas as pd
import pydicom
import pytest
import yaml
from snakemake.utils import validate

TINY_PATIENTS = ["SYN0001", "SYN0002", "SYN0003", "SYN0004"]


def planned_jobs(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule from the 'Job stats' table of a dry run; {} when nothing is to be done."""
    lines = (proc.stdout + proc.stderr).splitlines()
    if "Job stats:" not in lines:
        return {}
    counts = {}
    for line in lines[lines.index("Job stats:") + 3 :]:
        rule, count = line.split()
        if rule == "total":
            return counts
        counts[rule] = int(count)
    raise AssertionError("Job stats table without a total line")


def test_snakemake_lint_is_clean(repo_root, venv_bin):
    proc = subprocess.run(
        [str(venv_bin / "snakemake"), "--lint"],
        cwd=repo_root,
        check=False,
        capture_output=True,
        text=True,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Lints for" not in output, output


def test_snakefmt_check_passes(repo_root, venv_bin):
    proc = subprocess.run(
        [str(venv_bin / "snakefmt"), "--check", "Snakefile", "workflow/rules"],
        cwd=repo_root,
        check=False,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_config_yaml_holds_the_schema_defaults(repo_root):
    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    defaults = {}
    validate(defaults, str(repo_root / "workflow" / "schemas" / "config.schema.yaml"))
    assert config == defaults


@pytest.mark.parametrize(
    "synthetic, key",
    [
        ({"noise_model": "fancy"}, "noise_model"),
        ({"patients": 0}, "patients"),
        ({"size": 16}, "size"),
        ({"pixel_spacing_mm": [0.5]}, "pixel_spacing_mm"),
        ({"pateints": 4}, "pateints"),
    ],
)
def test_bad_config_value_is_named(tmp_path, run_snakemake, synthetic, key):
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text(yaml.safe_dump({"synthetic": synthetic}))
    proc = run_snakemake(tmp_path, "--dry-run", configfile=bad_config, check=False)
    assert proc.returncode != 0
    assert key in proc.stdout + proc.stderr


def test_dry_run_plans_one_job_per_patient(tmp_path, run_snakemake):
    proc = run_snakemake(tmp_path, "--dry-run")
    assert planned_jobs(proc) == {"synth_patient": 4, "synth_tables": 1, "all": 1}


@pytest.mark.slow
def test_tiny_synthetic_cohort_end_to_end(tmp_path, run_snakemake):
    run_snakemake(tmp_path)

    cohort = tmp_path / "results" / "synthetic"
    labels = pd.read_csv(cohort / "labels.tsv", sep="\t", dtype={"patient_id": str})
    assert sorted(labels["patient_id"].unique()) == TINY_PATIENTS
    patients = pd.read_csv(cohort / "truth" / "patients.tsv", sep="\t", dtype=str)
    assert len(patients) == 4
    for patient in TINY_PATIENTS:
        slices = sorted((cohort / "dicom" / patient).glob("*.dcm"))
        assert slices, f"no DICOM files for {patient}"
        pydicom.dcmread(slices[0])

    assert planned_jobs(run_snakemake(tmp_path, "--dry-run")) == {}

    # A larger cohort adds patients; the ones already written stay as they are.
    larger = tmp_path / "larger.yaml"
    larger.write_text(yaml.safe_dump({"synthetic": {"patients": 5, "size": 96}}))
    proc = run_snakemake(tmp_path, "--dry-run", configfile=larger)
    assert planned_jobs(proc) == {"synth_patient": 1, "synth_tables": 1, "all": 1}
