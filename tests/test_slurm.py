"""The workflow on a real SLURM cluster: the one-node cluster of tests/slurm/start.sh, driven through
profiles/slurm with the test overlay tests/slurm/profile.

The checks do not trust Snakemake's word alone: each rule log records, from inside the job, the
SLURM job id and partition (cacflow.runlog), and `scontrol show job` confirms that the controller
ran those jobs, in the partitions the profiles ask for."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cacflow.runlog import format_header, job_fields, read_header

TINY_PATIENTS = [f"SYN{i:04d}" for i in range(1, 7)]
# The per-patient stages and their merged tables (the splits and later stages are not SLURM
# work of the per-patient kind this test checks).
PER_PATIENT_TARGETS = [
    "results/qc/series.tsv",
    "results/qc/segmentation.tsv",
    "results/qc/datasets.tsv",
    *(f"results/datasets/{d}/manifest.tsv" for d in ("original", "segmented", "cropped")),
]
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")
# Rule -> its log folder under results/logs, for the rules of group `patient`.
PER_PATIENT_RULES = {
    "synth_patient": "synth",
    "process_patient": "patient",
}
# One job run inside a SLURM job, as its SLURM log shows it: `localrule <rule>:` and, among the
# indented lines below, `wildcards: patient=<id>`.
RAN_IN_JOB = re.compile(
    r"^localrule (\w+):\n(?:    .*\n)*?    wildcards: patient=(\S+)$", re.MULTILINE
)


def slurm_partitions() -> dict[str, str]:
    """State of the node behind each partition, {} when no SLURM controller answers."""
    if shutil.which("sinfo") is None:
        return {}
    try:
        proc = subprocess.run(
            ["sinfo", "--noheader", "--format", "%R %T"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {}
    if proc.returncode != 0:
        return {}
    return dict(line.split(maxsplit=1) for line in proc.stdout.splitlines() if line.strip())


def cluster_is_ready() -> bool:
    usable = {"idle", "mixed", "allocated", "completing"}
    partitions = slurm_partitions()
    return all(partitions.get(name) in usable for name in ("cpu", "gpu"))


@pytest.fixture(scope="session")
def slurm_cluster(repo_root):
    """The local SLURM cluster, started with tests/slurm/start.sh when it is not up and can be."""
    if cluster_is_ready():
        return
    if os.geteuid() != 0 or (shutil.which("sbatch") is None and shutil.which("apt-get") is None):
        pytest.skip(
            "no SLURM cluster with partitions cpu and gpu is running, and it cannot be started "
            "here (needs root and apt-get): run `sudo bash tests/slurm/start.sh` first"
        )
    start = subprocess.run(
        ["bash", str(repo_root / "tests" / "slurm" / "start.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if start.returncode != 0 or not cluster_is_ready():
        pytest.fail(
            f"tests/slurm/start.sh failed ({start.returncode}):\n{start.stdout}{start.stderr}"
        )


def slurm_profile_args(repo_root: Path) -> list[str]:
    """The cluster profile, the overlay for the local test cluster, and no workstation profile."""
    return [
        "--profile", str(repo_root / "profiles" / "slurm"),
        "--profile", str(repo_root / "tests" / "slurm" / "profile"),
        "--workflow-profile", "none",
    ]  # fmt: skip


def submissions(output: str) -> dict[str, Path]:
    """SLURM job id -> the plugin's SLURM log, for every job Snakemake submitted."""
    return {job_id: Path(log) for job_id, log in SUBMITTED.findall(output)}


def run_id(output: str) -> str:
    """The plugin's run id, which it gives every job as its SLURM job name."""
    match = re.search(r"SLURM run ID: (\S+)", output)
    assert match, output
    return match.group(1)


def slurm_job(job_id: str) -> dict[str, str]:
    """The controller's record of a job (`scontrol show job`; kept MinJobAge=300 s after it ends)."""
    proc = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", job_id],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"SLURM does not know job {job_id}: {proc.stderr}"
    return dict(word.split("=", 1) for word in proc.stdout.split() if "=" in word)


def test_rule_log_header_names_the_slurm_job(tmp_path):
    inside_job = {"SLURM_JOB_ID": "4211", "SLURM_JOB_PARTITION": "gpu", "HOME": "/root"}
    fields = job_fields("train_model", environ=inside_job, host="node17")
    assert fields == {
        "rule": "train_model",
        "host": "node17",
        "slurm_job_id": "4211",
        "slurm_partition": "gpu",
    }
    log = tmp_path / "train.log"
    log.write_text(format_header(fields) + "\nrest of the log\n")
    assert read_header(log) == fields
    assert job_fields("synth_tables", environ={}, host="laptop") == {
        "rule": "synth_tables",
        "host": "laptop",
    }


def test_rule_log_receives_header_logging_and_tracebacks(tmp_path):
    """What a rule script gets from start_rule_log, in a process of its own."""
    log = tmp_path / "rule.log"
    script = (
        "import logging\n"
        "from cacflow.runlog import start_rule_log\n"
        f"start_rule_log({str(log)!r}, 'synth_patient')\n"
        "logging.getLogger('cacflow.synthetic.synth').info('patient written')\n"
        "raise ValueError('bad slice')\n"
    )
    env = {**os.environ, "SLURM_JOB_ID": "77", "SLURM_JOB_PARTITION": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert proc.stderr == ""
    assert read_header(log) | {"host": "-"} == {
        "rule": "synth_patient",
        "host": "-",
        "slurm_job_id": "77",
        "slurm_partition": "cpu",
    }
    text = log.read_text()
    assert "INFO cacflow.synthetic.synth: patient written" in text
    assert "ValueError: bad slice" in text


@pytest.mark.slow
def test_tiny_cohort_runs_as_slurm_jobs(tmp_path, run_snakemake, repo_root, slurm_cluster):
    proc = run_snakemake(tmp_path, *slurm_profile_args(repo_root), *PER_PATIENT_TARGETS)
    output = proc.stdout + proc.stderr

    cohort = tmp_path / "results" / "synthetic"
    for patient in TINY_PATIENTS:
        assert sorted((cohort / "dicom" / patient).glob("*.dcm")), f"no DICOM files for {patient}"

    # The only rules that are not local are the per-patient ones, all in group `patient`; the
    # overlay's `group-components: {patient: 2}` makes the 6 patients 3 SLURM jobs.
    submitted = submissions(output)
    assert len(submitted) == len(TINY_PATIENTS) // 2, output
    for log in submitted.values():
        assert log.parent.name.startswith("group_patient_"), log

    # Every submitted job is a real SLURM job of this run, finished, in the default partition.
    name = run_id(output)
    for job_id in submitted:
        record = slurm_job(job_id)
        assert record["JobName"] == name
        assert record["JobState"] == "COMPLETED", record
        assert Path(record["WorkDir"]) == tmp_path
        assert record["Partition"] == "cpu", record

    # Inside the jobs: each patient's rule logs name the SLURM job they ran in, the same job for
    # the patient's whole chain, and each job holds two patients.
    patients_of_job: dict[str, set[str]] = {}
    for patient in TINY_PATIENTS:
        headers = {
            rule: read_header(tmp_path / "results" / "logs" / folder / f"{patient}.log")
            for rule, folder in PER_PATIENT_RULES.items()
        }
        for rule, header in headers.items():
            assert header["rule"] == rule, header
            assert header["slurm_partition"] == "cpu", header
        job_ids = {header.get("slurm_job_id") for header in headers.values()}
        assert len(job_ids) == 1, (patient, headers)
        job_id = job_ids.pop()
        assert job_id in submitted, (patient, headers)
        patients_of_job.setdefault(job_id, set()).add(patient)
    assert sorted(map(len, patients_of_job.values())) == [2, 2, 2], patients_of_job

    # SLURM's own log of each job lists what ran in it: every per-patient job ran exactly once,
    # in the job its rule log names.
    runs = {job_id: RAN_IN_JOB.findall(log.read_text()) for job_id, log in submitted.items()}
    ran = [(rule, patient) for executed in runs.values() for rule, patient in executed]
    expected = [(rule, patient) for rule in PER_PATIENT_RULES for patient in TINY_PATIENTS]
    assert sorted(ran) == sorted(expected), runs
    for job_id, executed in runs.items():
        assert {patient for _, patient in executed} == patients_of_job[job_id], runs

    # Documented in profiles/slurm: the plugin runs a group job's chains one after another
    # (`--jobs 1` inside the job, snakemake-executor-plugin-slurm#469). When this fails, the
    # plugin has changed: revisit group-components there and in docs/slurm.md.
    for log in submitted.values():
        assert "--executor slurm-jobstep --jobs 1 " in log.read_text(), log

    # The merged tables are local rules: they ran on the submitting host, not in a SLURM job.
    for rule in ("qc_series", "qc_segmentation", "qc_datasets"):
        header = read_header(tmp_path / "results" / "logs" / f"{rule}.log")
        assert header["rule"] == rule, header
        assert "slurm_job_id" not in header, header


@pytest.mark.slow
def test_failed_job_is_reported_and_gpu_rules_go_to_the_gpu_partition(
    tmp_path, venv_bin, repo_root, slurm_cluster
):
    cmd = [
        str(venv_bin / "snakemake"),
        "--snakefile", str(repo_root / "tests" / "slurm" / "failing.smk"),
        "--directory", str(tmp_path),
        "--cores", "1",
        *slurm_profile_args(repo_root),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output

    submitted = submissions(output)
    job_of_rule = {
        log.parent.name.removeprefix("rule_"): job_id for job_id, log in submitted.items()
    }
    assert sorted(job_of_rule) == ["fails", "ok", "train_model"], output
    failed_id = job_of_rule["fails"]

    # Snakemake names the failed rule and its SLURM job, and points to the SLURM log, which the
    # plugin keeps for failed jobs.
    assert "Error in rule fails:" in output, output
    assert f"SLURM-job '{failed_id}' failed" in output, output
    assert f"external_jobid: {failed_id}" in output, output
    assert submitted[failed_id].is_file()
    assert "exit 1" in submitted[failed_id].read_text()
    record = slurm_job(failed_id)
    assert record["JobState"] == "FAILED", record
    assert record["ExitCode"] == "1:0", record
    assert record["Partition"] == "cpu", record

    # keep-going: the jobs that work still ran, each in its own SLURM job: `ok` in the default
    # partition, `train_model` in `gpu` with one GPU (profiles/slurm set-resources).
    for rule, partition in (("ok", "cpu"), ("train_model", "gpu")):
        job_id = job_of_rule[rule]
        assert (tmp_path / f"{rule}.txt").read_text().split() == [
            f"slurm_job_id={job_id}",
            f"slurm_partition={partition}",
        ]
        record = slurm_job(job_id)
        assert record["JobState"] == "COMPLETED", record
        assert record["Partition"] == partition, record
    assert slurm_job(job_of_rule["train_model"]).get("TresPerJob") == "gres:gpu:1"
    assert "gpu" not in slurm_job(job_of_rule["ok"]).get("TresPerJob", "")


@pytest.mark.slow
def test_real_training_job_runs_in_the_gpu_partition(
    tmp_path, run_snakemake, repo_root, slurm_cluster
):
    """The workflow's own train_model (tiny: ResNet50 at 32 px) is sent by profiles/slurm to
    partition `gpu` with one GPU, and trains there: its log names that SLURM job."""
    target = "results/models/original/resnet50/summary.tsv"
    proc = run_snakemake(tmp_path, *slurm_profile_args(repo_root), target)
    output = proc.stdout + proc.stderr
    submitted = submissions(output)
    trainings = [job_id for job_id, log in submitted.items() if "train_model" in str(log)]
    assert len(trainings) == 1, output
    job_id = trainings[0]
    record = slurm_job(job_id)
    assert record["JobState"] == "COMPLETED", record
    assert record["Partition"] == "gpu", record
    assert record.get("TresPerJob") == "gres:gpu:1", record
    header = read_header(tmp_path / "results" / "logs" / "train" / "original" / "resnet50.log")
    assert header["slurm_job_id"] == job_id and header["slurm_partition"] == "gpu", header
    summary = (tmp_path / target).read_text().splitlines()
    assert len(summary) == 2 and summary[1].startswith("original\tresnet50\t")
