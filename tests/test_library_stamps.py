"""An edit of any library module reruns exactly the rules whose scripts import it, directly
or through other modules: checked on a copy of the workflow with a finished tiny run (its
outputs made and marked up to date without computing them), one module edited at a time.
The expected rules come from the standard library's modulefinder, not from the workflow."""

import os
import re
import shutil
import subprocess
import sys
from modulefinder import ModuleFinder
from pathlib import Path

import pytest
from smk_rules import REPO_ROOT, rules

SNAKEMAKE = Path(sys.executable).parent / "snakemake"
# What the workflow reads of the repository (tests/config for the tiny cohort).
COPIED = ("Snakefile", "config.yaml", "workflow", "envs", "profiles", "tests/config")


def imported_library_files(script: Path) -> set[Path]:
    """Library files a script runs, as Python's modulefinder follows its imports."""
    finder = ModuleFinder(path=[str(script.parent)])
    finder.run_script(str(script))
    return {
        Path(module.__file__).resolve()
        for name, module in finder.modules.items()
        if name.split(".")[0] == "cacflow" and module.__file__
    }


def replanned_for_library(out: str) -> set[str]:
    """Rules of a dry run planned because a library stamp they take changed."""
    jobs = re.findall(r"^\s*rule (\w+):\n(?:\s+.*\n)*?\s+reason: (.*)$", out, re.MULTILINE)
    return {rule for rule, reason in jobs if "results/library/" in reason}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """(copy of the repository, snakemake command) with a tiny run, external cohort included,
    whose every output exists and is up to date."""
    root = tmp_path_factory.mktemp("stamps")
    repo, workdir = root / "repo", root / "run"
    for name in COPIED:
        source, target = REPO_ROOT / name, repo / name
        if source.is_dir():
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    external = root / "external.yaml"
    external.write_text("external:\n  patients: 2\n")
    cmd = [
        str(SNAKEMAKE), "--snakefile", str(repo / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(repo / "tests/config/tiny.yaml"), str(external), "--cores", "1",
    ]  # fmt: skip

    def snakemake(*args):
        return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True)

    summary = snakemake("--summary").stdout.splitlines()[1:]
    for line in summary:
        path = workdir / line.split("\t")[0]
        if "." in path.name:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:  # a directory() output: patient folders of DICOM and images
            path.mkdir(parents=True, exist_ok=True)
    snakemake("--touch")
    assert "Nothing to be done" in snakemake("--dry-run").stdout
    in_run = {line.split("\t")[2] for line in summary}
    return repo, snakemake, in_run


def test_each_module_edit_replans_the_rules_that_import_it(finished_run):
    repo, snakemake, in_run = finished_run
    # rules(repo) reads the copy's rule files: their scripts are the copy's.
    scripts = {
        name: entry["script"]
        for name, entry in rules(repo).items()
        if entry["script"] and name in in_run
    }
    assert all(script.is_relative_to(repo) for script in scripts.values())
    imports = {name: imported_library_files(script) for name, script in scripts.items()}
    modules = sorted((repo / "workflow/scripts/cacflow").rglob("*.py"))
    assert len(modules) > 20 and {"process_patient", "train_model"} <= set(scripts)
    for module in modules:
        original, stat = module.read_bytes(), module.stat()
        module.write_bytes(original + b"\n# edited\n")
        try:
            out = snakemake("--dry-run").stdout
        finally:
            module.write_bytes(original)
            os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        expected = {name for name, files in imports.items() if module.resolve() in files}
        assert replanned_for_library(out) == expected, module.name


def test_a_stamp_of_another_script_is_refused_when_parsed(finished_run):
    repo, snakemake, _ = finished_run
    rules_file = repo / "workflow/rules/evaluate.smk"
    original = rules_file.read_text()
    assert 'lib=lib("evaluate")' in original
    rules_file.write_text(original.replace('lib=lib("evaluate")', 'lib=lib("merge_tables")'))
    try:
        with pytest.raises(subprocess.CalledProcessError) as failure:
            snakemake("--dry-run")
    finally:
        rules_file.write_text(original)
    out = failure.value.stdout + failure.value.stderr
    assert "evaluate: input lib is 'results/library/merge_tables.sha256'" in out
    assert "needs 'results/library/evaluate.sha256'" in out


def test_a_gradcam_setting_replans_the_gradcam_rules_only(finished_run):
    # The metrics rules take the evaluation keys they read, not the whole section.
    repo, snakemake, _ = finished_run
    overlay = repo.parent / "gradcam.yaml"
    overlay.write_text("evaluation:\n  gradcam_min_cells: 3\n")
    configs = [repo / "tests/config/tiny.yaml", repo.parent / "external.yaml", overlay]
    out = snakemake("--dry-run", "--configfile", *map(str, configs)).stdout
    jobs = re.findall(r"^\s*rule (\w+):\n(?:\s+.*\n)*?\s+reason: (.*)$", out, re.MULTILINE)
    assert {rule for rule, reason in jobs if "Params have changed" in reason} == {
        "gradcam_figure",
        "external_pointing",
    }
