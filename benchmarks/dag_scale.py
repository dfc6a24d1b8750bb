"""How long Snakemake takes to plan the workflow for a cohort of the paper's size, and how
many cluster submissions the plan becomes.

A dry run (`snakemake -n`) of the default workflow with a 2,300-patient synthetic cohort (no
images are made: a dry run only plans), once with every per-patient rule a job of its own
and once with the per-patient group `patient` batched by `--group-components patient=N`.
Submissions are the jobs a cluster executor would submit: group jobs, plus the non-local
jobs outside groups (local rules such as the merged tables run on the submitting host).

    .venv/bin/python benchmarks/dag_scale.py [--patients 2300] [--group-size 20] [--record]

`--record` appends the table to docs/benchmarks.md. Target: a DAG in <= 15 s. The same run
also plans a bare Snakemake DAG of the issue's shape (patients x 3 one-input shell rules plus
9 rules over every patient), so the ratio to it holds on a loaded machine too.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _common import REPO_ROOT, append_section

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
TARGET_S = 15.0


def dry_run(workdir: Path, config: Path, *extra: str) -> tuple[float, str]:
    cmd = [
        str(SNAKEMAKE), "--snakefile", str(REPO_ROOT / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(config), "--cores", "1", "--dry-run", *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, proc.stdout + proc.stderr


# Rules that run on the submitting host (localrule: True, or no execution at all).
LOCAL_RULES = {"all", "synth_tables", "qc_series", "qc_segmentation", "qc_datasets"}
LOCAL_RULES |= {"dataset_manifest", "library_stamp", "make_splits", "augmentation_figure"}
LOCAL_RULES |= {"agatston_patients", "agatston_agreement", "agatston_figures", "hybrid_scores"}
LOCAL_RULES |= {"training_summary", "training_curves", "evaluation_figures"}
LOCAL_RULES |= {"example_figure", "report"}
GROUPED_RULES = {"synth_patient", "process_patient"}


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from the first 'Job stats' table of a dry run."""
    lines = output.splitlines()
    start = lines.index("Job stats:") + 3
    stats = {}
    for line in lines[start:]:
        rule, number = line.split()
        if rule == "total":
            return stats
        stats[rule] = int(number)
    raise ValueError("Job stats table without a total line")


BARE_SNAKEFILE = """
P = [f"PAT{{i:05d}}" for i in range(1, {patients} + 1)]
rule all:
    input: expand("train/m{{i}}.txt", i=range(9))
rule a:
    output: "a/{{p}}.txt"
    shell: "touch {{output}}"
rule b:
    input: "a/{{p}}.txt"
    output: "b/{{p}}.txt"
    shell: "touch {{output}}"
rule c:
    input: "b/{{p}}.txt"
    output: "c/{{p}}.txt"
    shell: "touch {{output}}"
rule train:
    input: expand("c/{{p}}.txt", p=P)
    output: "train/m{{i}}.txt"
    shell: "touch {{output}}"
"""


def bare_dry_run(root: Path, patients: int) -> tuple[float, int]:
    """Seconds and jobs of a dry run of the bare reference DAG."""
    snakefile = root / "bare" / "Snakefile"
    snakefile.parent.mkdir()
    snakefile.write_text(BARE_SNAKEFILE.format(patients=patients))
    cmd = [str(SNAKEMAKE), "--snakefile", str(snakefile), "--cores", "1", "--dry-run"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=snakefile.parent, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, sum(job_stats(proc.stdout + proc.stderr).values())


def count(output: str) -> tuple[int, int, int]:
    """(jobs, group jobs, cluster submissions) of a dry run's output."""
    stats = job_stats(output)
    groups = output.count("Group job ")
    ungrouped = sum(n for rule, n in stats.items() if rule not in LOCAL_RULES | GROUPED_RULES)
    return sum(stats.values()), groups, groups + ungrouped


def own_data_config(root: Path, patients: int) -> Path:
    """A cohort of the user's kind: `patients` study folders (one placeholder file each: a
    dry run reads no image) and a label table."""
    studies = root / "studies"
    rows = ["patient_id\tinstance_number\tcalcium"]
    for i in range(1, patients + 1):
        folder = studies / f"PAT{i:05d}"
        folder.mkdir(parents=True)
        (folder / "0001.dcm").write_bytes(b"")
        rows.append(f"PAT{i:05d}\t1\t0")
    labels = root / "labels.tsv"
    labels.write_text("\n".join(rows) + "\n")
    config = root / "own.yaml"
    config.write_text(yaml.safe_dump({"dicom_dir": str(studies), "labels": str(labels)}))
    return config


def version() -> str:
    proc = subprocess.run([str(SNAKEMAKE), "--version"], check=True, capture_output=True, text=True)
    return proc.stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2300)
    parser.add_argument("--group-size", type=int, default=20)
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cacflow-dag-") as tmp:
        synthetic = Path(tmp) / "cohort.yaml"
        synthetic.write_text(yaml.safe_dump({"synthetic": {"patients": args.patients}}))
        own = own_data_config(Path(tmp), args.patients)
        grouped = ("--group-components", f"patient={args.group_size}")
        for label, config, extra in (
            ("own data, one job per patient", own, ()),
            (f"own data, --group-components patient={args.group_size}", own, grouped),
            ("synthetic, synth_patient + process_patient", synthetic, ()),
            (f"synthetic, --group-components patient={args.group_size}", synthetic, grouped),
        ):
            seconds, output = dry_run(Path(tmp) / "work", config, *extra)
            rows.append((label, seconds, *count(output)))
        bare_seconds, bare_jobs = bare_dry_run(Path(tmp), args.patients)
    lines = [
        (
            "| plan | DAG + dry run, s | jobs | group jobs | cluster submissions "
            "| ratio to 15 s | ratio to the bare DAG |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, seconds, jobs, groups, submissions in rows:
        lines.append(
            f"| {label} | {seconds:.1f} | {jobs} | {groups} | {submissions} | "
            f"{seconds / TARGET_S:.2f} | {seconds / bare_seconds:.2f} |"
        )
    lines.append(
        f"| bare reference DAG (3 shell rules per patient + 9) | {bare_seconds:.1f} | "
        f"{bare_jobs} | | | {bare_seconds / TARGET_S:.2f} | 1.00 |"
    )
    table = "\n".join(lines)
    print(table)
    if args.record:
        append_section(
            "dag_scale",
            f"{args.patients} patients (dry run: no images), own data (study folders and a "
            f"label table: one job per patient, process_patient) and synthetic (synth_patient "
            f"too), snakemake {version()}",
            table,
            cores_used="one (Snakemake plans on one core)",
        )


if __name__ == "__main__":
    main()
