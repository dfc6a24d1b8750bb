"""The workflow and `cacflow ingest` on a user's own DICOM folder: bad studies are listed
and left out without failing the run (or stop it in strict mode), and no identifying value
from the DICOM headers reaches results/ or the logs."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

from cacflow.convert.coca import convert_coca, synth_coca
from cacflow.patients import pseudonym
from cacflow.synthetic.synth import SynthSettings, synth_cohort

GOOD = ["SYN0001", "SYN0002"]
# The stages this file checks (two good patients are too few to split: later stages wait).
TARGETS = [
    "results/qc/series.tsv",
    "results/qc/segmentation.tsv",
    "results/qc/datasets.tsv",
    *(f"results/datasets/{d}/manifest.tsv" for d in ("original", "segmented", "cropped")),
]


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def write_config(path: Path, **sections) -> Path:
    path.write_text(yaml.safe_dump(sections))
    return path


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A user's folder: two good studies, one with a text file among its slices, one empty,
    one the label table does not cover, and the label table."""
    cohort = tmp_path_factory.mktemp("cohort")
    synth_cohort(cohort, 3, SynthSettings(size=96))
    root = tmp_path_factory.mktemp("archive")
    dicom = root / "dicom"
    for pid in GOOD:
        shutil.copytree(cohort / "dicom" / pid, dicom / pid)
    shutil.copytree(cohort / "dicom" / "SYN0003", dicom / "BROKEN")
    (dicom / "BROKEN" / "IM0007.dcm").write_text("not an image\n")
    (dicom / "EMPTY").mkdir()
    shutil.copytree(cohort / "dicom" / "SYN0003", dicom / "SYN0003")
    # The label table lacks SYN0003.
    labels = pd.read_csv(cohort / "labels.tsv", sep="\t", dtype=str)
    labels[labels["patient_id"] != "SYN0003"].to_csv(root / "labels.tsv", sep="\t", index=False)
    return root


@pytest.fixture(scope="module")
def phi_archive(tmp_path_factory) -> Path:
    """Studies whose headers hold names, IDs, dates and institutions (cacflow synth --phi)."""
    root = tmp_path_factory.mktemp("phi")
    synth_cohort(root, 2, SynthSettings(size=96, phi=True))
    return root


def identifying_values(phi_archive: Path) -> set[str]:
    table = pd.read_csv(phi_archive / "truth" / "phi.tsv", sep="\t", dtype=str)
    values = set(table["value"].dropna())
    # Parts of names too (DOE^JANE -> DOE, JANE); single letters (sex) cannot be searched.
    values |= {part for v in list(values) for part in v.split("^") if part}
    return {v for v in values if len(v) >= 4}


def leaked(root: Path, values: set[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path.relative_to(root)}: {v}" for v in values if v.encode() in data]
    return found


@pytest.mark.slow
def test_bad_studies_are_listed_and_left_out(tmp_path, run_snakemake, archive):
    config = write_config(
        tmp_path / "own.yaml",
        dicom_dir=str(archive / "dicom"),
        labels=str(archive / "labels.tsv"),
    )
    run_snakemake(tmp_path, *TARGETS, configfile=config)
    results = tmp_path / "results"
    qc = pd.read_csv(results / "qc" / "series.tsv", sep="\t", dtype=str, keep_default_na=False)
    status = dict(zip(qc["patient_id"], qc["status"], strict=True))
    refused = dict.fromkeys(["BROKEN", "EMPTY", "SYN0003"], "refused")
    assert status == {**refused, **dict.fromkeys(GOOD, "accepted")}
    reasons = dict(zip(qc["patient_id"], qc["reason"], strict=True))
    assert reasons["BROKEN"] == "BROKEN: IM0007.dcm: not a DICOM file (no DICM prefix)"
    assert reasons["EMPTY"] == "EMPTY: empty folder: no files"
    n = len(list((archive / "dicom" / "SYN0003").glob("*.dcm")))
    assert reasons["SYN0003"].startswith(
        f"SYN0003: no label-table row for {n} of {n} slices (instance numbers 1, 2, 3,"
    )
    for dataset in ("original", "segmented", "cropped"):
        manifest = pd.read_csv(results / "datasets" / dataset / "manifest.tsv", sep="\t")
        assert sorted(manifest["patient_id"].unique()) == GOOD
    assert not (results / "synthetic").exists()
    labels = pd.read_csv(archive / "labels.tsv", sep="\t", dtype={"patient_id": str})
    original = pd.read_csv(results / "datasets" / "original" / "manifest.tsv", sep="\t")
    expected = labels[labels["patient_id"].isin(GOOD)]
    assert len(original) == len(expected)
    assert (original["label"] == "calcium").sum() == expected["calcium"].sum()

    # Strict: the first refused study stops the run, with its reason in the job's log.
    strict = write_config(
        tmp_path / "strict.yaml",
        dicom_dir=str(archive / "dicom"),
        labels=str(archive / "labels.tsv"),
        ingest={"strict": True},
    )
    proc = run_snakemake(tmp_path / "strict", *TARGETS, configfile=strict, check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (tmp_path / "strict").rglob("logs/patient/*.log"))
    assert "ingest.strict is set" in logs and "not a DICOM file" in logs

    # One file of one study changes (a re-exported slice with another display window;
    # Snakemake compares the content of small inputs, not only their time): that patient's
    # chain and the merged tables are planned again, no other patient's.
    path = sorted((archive / "dicom" / "SYN0001").glob("*.dcm"))[3]
    dataset = pydicom.dcmread(path)
    dataset.WindowCenter = 51
    dataset.save_as(path, enforce_file_format=True)
    proc = run_snakemake(tmp_path, "--dry-run", *TARGETS, configfile=config)
    out = proc.stdout + proc.stderr
    assert "Job stats:" in out, out
    assert set(re.findall(r"patient=(\w+)", out)) == {"SYN0001"}
    replanned = {"process_patient": 1, "qc_series": 1, "qc_segmentation": 1, "dataset_manifest": 3}
    for rule, count in replanned.items():
        assert re.search(rf"^{rule}\s+{count}$", out, re.MULTILINE), (rule, out)

    # One patient's rows of the label table change (a slice relabelled): that patient alone is
    # planned again, although the table is one file for all patients.
    run_snakemake(tmp_path, *TARGETS, configfile=config)
    table = archive / "labels.tsv"
    labels = pd.read_csv(table, sep="\t", dtype=str)
    row = labels.index[labels["patient_id"] == "SYN0002"][0]
    labels.loc[row, "calcium"] = "1" if labels.loc[row, "calcium"] == "0" else "0"
    labels.to_csv(table, sep="\t", index=False)
    proc = run_snakemake(tmp_path, "--dry-run", *TARGETS, configfile=config)
    out = proc.stdout + proc.stderr
    assert set(re.findall(r"patient=(\w+)", out)) == {"SYN0002"}, out
    assert re.search(r"^process_patient\s+1$", out, re.MULTILINE), out
    relabelled = run_snakemake(tmp_path, *TARGETS, configfile=config)
    original = pd.read_csv(results / "datasets" / "original" / "manifest.tsv", sep="\t")
    assert (original["label"] == "calcium").sum() == pd.to_numeric(
        labels.loc[labels["patient_id"].isin(GOOD), "calcium"]
    ).sum(), relabelled.stdout


@pytest.fixture(scope="module")
def referenced_archive(tmp_path_factory) -> Path:
    """Own data with a reference: a synthetic cohort in COCA's format (InstanceNumber
    rising from the bottom of the scan) through `cacflow convert coca`."""
    root = tmp_path_factory.mktemp("referenced")
    synth_coca(root / "coca", 3, SynthSettings(size=96, seed=3), instance_order="ascending")
    convert_coca(root / "coca", root)
    shutil.move(root / "coca" / "truth", root / "truth")
    return root


@pytest.mark.slow
def test_own_data_with_lesion_maps_and_reference(tmp_path, run_snakemake, referenced_archive):
    root = referenced_archive
    config = write_config(
        tmp_path / "own.yaml",
        dicom_dir=str(root / "dicom"),
        labels=str(root / "labels.tsv"),
        lesions=str(root / "lesions"),
        reference=str(root / "reference.tsv"),
    )
    ids = ["SYN0001", "SYN0002", "SYN0003"]
    targets = [
        "results/qc/datasets.tsv",
        "results/qc/segmentation.tsv",
        "results/reference/patients.tsv",
        *(f"results/agatston/lesion_eval/{pid}.tsv" for pid in ids),
    ]
    run_snakemake(tmp_path, *targets, configfile=config)
    results = tmp_path / "results"
    truth = read(root / "truth" / "patients.tsv").set_index("patient_id")
    assert truth["n_lesions"].astype(int).sum() > 0  # the cohort has calcium to find
    assert set(read(results / "qc" / "datasets.tsv")["label_source"]) == {"lesion_map"}
    segmentation = read(results / "qc" / "segmentation.tsv").set_index("patient_id")
    assert (segmentation["dice_volume"] == "").all()  # the maps carry no heart mask
    for pid in ids:
        row = read(results / "agatston" / "lesion_eval" / f"{pid}.tsv").iloc[0]
        # The reference's calcium, whatever the slice order its map was written in.
        assert float(row["true_volume_mm3"]) == pytest.approx(
            float(truth.loc[pid, "volume_mm3"]), abs=0.01
        ), pid
    reference = read(results / "reference" / "patients.tsv").set_index("patient_id")
    assert list(reference.index) == ids
    for column in ("agatston_total", "agatston_lad", "agatston_lcx", "agatston_rca"):
        assert list(reference[column]) == list(truth.loc[ids, column]), column

    # A study without its lesion map: one clear error before anything runs.
    (root / "lesions" / "SYN0002.npz").rename(tmp_path / "SYN0002.npz")
    try:
        proc = run_snakemake(tmp_path / "missing", "--dry-run", configfile=config, check=False)
    finally:
        (tmp_path / "SYN0002.npz").rename(root / "lesions" / "SYN0002.npz")
    assert proc.returncode != 0
    assert "lesions: no lesion map for 1 patients" in proc.stderr + proc.stdout
    assert "SYN0002.npz" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_no_identifier_reaches_results_or_logs(tmp_path, run_snakemake, phi_archive):
    values = identifying_values(phi_archive)
    assert len(values) > 10  # names, MRNs, dates, institutions, physicians
    common = {"dicom_dir": str(phi_archive / "dicom"), "labels": str(phi_archive / "labels.tsv")}

    # Not pseudonymized: both studies are refused, naming tags, never values.
    refused = tmp_path / "refused"
    run_snakemake(refused, *TARGETS, configfile=write_config(tmp_path / "a.yaml", **common))
    qc = pd.read_csv(refused / "results" / "qc" / "series.tsv", sep="\t", dtype=str)
    assert set(qc["status"]) == {"refused"}
    assert qc["reason"].str.contains("not anonymized: identifying values in PatientName").all()

    # Pseudonymized: accepted under keyed pseudonyms; the headers' identities go nowhere.
    accepted = tmp_path / "accepted"
    ingest = {"pseudonymize": True, "pseudonym_key": "test-secret"}
    config = write_config(tmp_path / "b.yaml", **common, ingest=ingest)
    run_snakemake(accepted, *TARGETS, configfile=config)
    qc = pd.read_csv(accepted / "results" / "qc" / "series.tsv", sep="\t", dtype=str)
    assert set(qc["status"]) == {"accepted"}
    assert sorted(qc["patient_id"]) == sorted(pseudonym(p, "test-secret") for p in GOOD)

    for workdir in (refused, accepted):
        assert leaked(workdir / "results", values) == []
        assert leaked(workdir / ".snakemake" / "log", values) == []


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "cacflow"), "ingest", *args],
        check=False,
        capture_output=True,
        text=True,
    )


def test_cli_ingest_writes_the_workflows_files(tmp_path, archive):
    study = archive / "dicom" / "SYN0001"
    proc = run_cli(str(study), "--out", str(tmp_path), "--labels", str(archive / "labels.tsv"))
    assert proc.returncode == 0, proc.stderr
    assert "SYN0001: accepted" in proc.stderr
    qc = pd.read_csv(tmp_path / "qc" / "series.tsv", sep="\t", dtype=str)
    assert list(qc["status"]) == ["accepted"]
    assert (tmp_path / "segmentation" / "SYN0001.npz").is_file()
    n_files = len(list(study.glob("*.dcm")))
    original = pd.read_csv(tmp_path / "datasets" / "original" / "manifest.tsv", sep="\t")
    assert len(original) == n_files
    assert all((tmp_path / "datasets" / "original" / p).is_file() for p in original["path"])


def test_cli_ingest_refusal_is_one_line_and_nonzero(tmp_path, archive):
    proc = run_cli(str(archive / "dicom" / "BROKEN"), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr == "refused: BROKEN: IM0007.dcm: not a DICOM file (no DICM prefix)\n"
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "segmentation").exists()


def test_cli_ingest_pseudonymizes_a_study_with_identifiers(tmp_path, phi_archive):
    study = phi_archive / "dicom" / "SYN0001"
    assert run_cli(str(study), "--out", str(tmp_path / "a")).returncode == 2
    proc = run_cli(
        str(study),
        "--out",
        str(tmp_path / "b"),
        "--labels",
        str(phi_archive / "labels.tsv"),
        "--pseudonymize",
        "--pseudonym-key",
        "k",
    )
    assert proc.returncode == 0, proc.stderr
    expected = pseudonym("SYN0001", "k")
    assert (tmp_path / "b" / "segmentation" / f"{expected}.npz").is_file()
    assert leaked(tmp_path, identifying_values(phi_archive)) == []
    ds = pydicom.dcmread(next(study.glob("*.dcm")))
    assert str(ds.PatientName) not in proc.stderr


def test_no_synthetic_external_cohort_with_own_data_unless_asked(tmp_path, run_snakemake, archive):
    own = {"dicom_dir": str(archive / "dicom"), "labels": str(archive / "labels.tsv")}
    planned = {}
    for with_own_data in (False, True):
        config = write_config(
            tmp_path / f"own_{with_own_data}.yaml",
            **own,
            external={"patients": 2, "with_own_data": with_own_data},
        )
        proc = run_snakemake(tmp_path, "--dry-run", configfile=config)
        jobs = re.findall(r"^(external_\w+)\s+\d+$", proc.stdout, re.MULTILINE)
        planned[with_own_data] = set(jobs)
    assert planned[False] == set()
    assert {"external_predict", "external_evaluate", "external_series_qc"} <= planned[True]
