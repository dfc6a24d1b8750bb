"""The Snakemake workflow as a user meets it: lint, format, config checks, plan, and a real run
of the tiny synthetic cohort."""

import dataclasses
import re
import subprocess

import keras
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml
from PIL import Image
from smk_rules import rules
from snakemake.utils import validate

from cacflow.learning.model_file import read_preprocessing
from cacflow.pipeline import SETTINGS

TINY_PATIENTS = [f"SYN{i:04d}" for i in range(1, 7)]


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


def test_every_rule_that_runs_as_a_job_records_a_benchmark():
    # benchmark: gives each job's time and memory, as log: gives its messages; local rules
    # (merging tables, small figures) run inside the main process.
    jobs = {
        name: entry for name, entry in rules().items() if entry["script"] and not entry["local"]
    }
    assert {"process_patient", "train_model", "evaluate", "gradcam_figure"} <= set(jobs)
    assert [name for name, entry in jobs.items() if not entry["benchmark"]] == []


def test_config_yaml_holds_the_schema_defaults(repo_root):
    config = yaml.safe_load((repo_root / "config.yaml").read_text())
    defaults = {}
    validate(defaults, str(repo_root / "workflow" / "schemas" / "config.schema.yaml"))
    assert config == defaults


def test_the_schema_holds_every_setting_of_the_library_with_its_default(repo_root):
    # A setting missing from the schema could not be set from config.yaml
    # (additionalProperties: false there).
    schema = yaml.safe_load((repo_root / "workflow" / "schemas" / "config.schema.yaml").read_text())
    for section, settings_class in SETTINGS.items():
        properties = schema["properties"][section]["properties"]
        fields = {
            f.name: f.default
            for f in dataclasses.fields(settings_class)
            if f.name != "png_compress_level"  # how the PNGs are stored, not what they show
        }
        assert {name: spec["default"] for name, spec in properties.items()} == fields, section


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


PER_PATIENT = ("synth_patient", "process_patient")
MERGED = {
    "synth_tables": 1,
    "qc_series": 1,
    "qc_segmentation": 1,
    "qc_datasets": 1,
    "agatston_patients": 1,
    "agatston_agreement": 1,
    "agatston_lesions": 1,
    "agatston_figures": 1,
}
SPLITS = {"make_splits": 1, "augment_dataset": 3, "augmentation_figure": 1}
# tests/config/tiny.yaml trains one network: one job per dataset.
TRAINING = {
    "train_model": 3,
    "training_summary": 1,
    "training_curves": 3,
    "evaluate": 1,
    "evaluation_figures": 1,
    "gradcam_figure": 3,
    "hybrid_scores": 3,
    "example_figure": 1,
    "report": 1,
}


def test_dry_run_plans_one_job_per_patient(tmp_path, run_snakemake):
    proc = run_snakemake(tmp_path, "--dry-run")
    planned = planned_jobs(proc)
    # One stamp per rule script that imports the library (workflow/rules/library.smk).
    assert planned.pop("library_stamp") > 0
    assert planned == {
        **dict.fromkeys(PER_PATIENT, 6),
        **MERGED,
        "dataset_manifest": 3,
        **SPLITS,
        **TRAINING,
        "all": 1,
    }


@pytest.mark.slow
def test_tiny_synthetic_cohort_end_to_end(tmp_path, run_snakemake, tiny_config):
    run_snakemake(tmp_path)

    cohort = tmp_path / "results" / "synthetic"
    labels = pd.read_csv(cohort / "labels.tsv", sep="\t", dtype={"patient_id": str})
    assert sorted(labels["patient_id"].unique()) == TINY_PATIENTS
    patients = pd.read_csv(cohort / "truth" / "patients.tsv", sep="\t", dtype=str)
    assert len(patients) == 6
    for patient in TINY_PATIENTS:
        slices = sorted((cohort / "dicom" / patient).glob("*.dcm"))
        assert slices, f"no DICOM files for {patient}"
        pydicom.dcmread(slices[0])

    results = tmp_path / "results"
    qc = pd.read_csv(results / "qc" / "series.tsv", sep="\t", dtype=str)
    assert list(qc["patient_id"]) == TINY_PATIENTS
    assert set(qc["status"]) == {"accepted"}
    seg = pd.read_csv(results / "qc" / "segmentation.tsv", sep="\t")
    assert list(seg["patient_id"]) == TINY_PATIENTS
    # 96 px images (3-4 mm pixels) are far coarser than CT: a plausibility bound only; the
    # segmentation targets are checked at clinical resolution in test_segmentation.py.
    assert (seg["dice_heart_slices"] > 0.6).all(), seg
    for patient in TINY_PATIENTS:
        with np.load(results / "segmentation" / f"{patient}.npz") as data:
            n_slices = len(list((cohort / "dicom" / patient).glob("*.dcm")))
            assert data["heart_mask"].shape == (n_slices, 96, 96)
            assert list(data["instance_numbers"]) == list(range(1, n_slices + 1))
    sizes = {"original": 96, "segmented": 299, "cropped": 299}
    for dataset, size in sizes.items():
        manifest = pd.read_csv(results / "datasets" / dataset / "manifest.tsv", sep="\t")
        assert sorted(manifest["patient_id"].unique()) == TINY_PATIENTS
        for path in manifest["path"].sample(5, random_state=0):
            with Image.open(results / "datasets" / dataset / path) as image:
                assert image.size == (size, size) and image.mode == "L"
    counts = pd.read_csv(results / "qc" / "datasets.tsv", sep="\t")
    assert (counts["n_original"] == counts["n_slices"]).all()
    assert (counts["n_cropped"] == 9 * counts["n_segmented"]).all()
    assert (counts["n_segmented"] == counts["n_slices"] - counts["n_empty_mask_dropped"]).all()
    # The HU volumes are temporary: gone once the datasets are made.
    assert not list(results.glob("ingest/*.npz"))

    # Whole patients go to the splits, each split holding both classes; only training
    # patients are augmented.
    splits = pd.read_csv(results / "splits" / "patients.tsv", sep="\t", dtype=str)
    assert sorted(splits["patient_id"]) == TINY_PATIENTS
    for split, group in splits.groupby("split"):
        assert set(group["calcium"]) == {"0", "1"}, (split, group)
    training = set(splits.loc[splits["split"] == "train", "patient_id"])
    for dataset in sizes:
        augmented = pd.read_csv(results / "augmented" / dataset / "manifest.tsv", sep="\t")
        assert len(augmented) > 0
        assert set(augmented["patient_id"]) <= training
    assert (results / "figures" / "augmentation.png").stat().st_size > 0

    # Agatston: one classical row per accepted patient, beside its true score.
    scores = pd.read_csv(results / "agatston" / "patients.tsv", sep="\t", dtype=str)
    hybrid = scores[scores["method"].str.startswith("hybrid:")]
    scores = scores[scores["method"] == "classical"]
    # Hybrid: each network's test patients, scored with a subset of their classical lesions.
    assert set(hybrid["method"]) == {f"hybrid:{dataset}/resnet50" for dataset in sizes}
    test_ids = sorted(splits.loc[splits["split"] == "test", "patient_id"])
    classical_score = scores.set_index("patient_id")["agatston"].astype(float)
    for _, group in hybrid.groupby("method"):
        assert sorted(group["patient_id"]) == test_ids
        for patient, score in zip(group["patient_id"], group["agatston"], strict=True):
            assert 0 <= float(score) <= classical_score[patient] + 1e-6
    assert list(scores["patient_id"]) == list(qc.loc[qc["status"] == "accepted", "patient_id"])
    truth = patients.set_index("patient_id")
    assert list(scores["truth_agatston"]) == list(truth.loc[scores["patient_id"], "agatston_total"])
    assert list(scores["truth_risk_category"]) == list(
        truth.loc[scores["patient_id"], "risk_category"]
    )
    assert scores["agatston"].astype(float).ge(0).all()
    cropped = pd.read_csv(results / "datasets" / "cropped" / "manifest.tsv", sep="\t")
    images = set(zip(cropped["patient_id"], cropped["slice"], cropped["tile"], strict=True))
    for patient in TINY_PATIENTS:
        lesions = pd.read_csv(
            results / "agatston" / "lesions" / f"{patient}.tsv", sep="\t", dtype={"tiles": str}
        )
        row = scores.set_index("patient_id").loc[patient]
        assert len(lesions) == int(row["n_lesions"])
        assert lesions["score"].sum() == pytest.approx(float(row["agatston"]), abs=0.01)
        # Per artery: each lesion's score counts for the artery it names.
        for artery in ("LAD", "LCX", "RCA"):
            on_it = lesions.loc[lesions["artery"] == artery, "score"].sum()
            assert float(row[f"agatston_{artery.lower()}"]) == pytest.approx(on_it, abs=0.01)
            true_column = f"agatston_{artery.lower()}"
            assert row[f"truth_{true_column}"] == truth.loc[patient, true_column]
        # Each lesion names cropped images that exist: the same slices and tiles.
        for instance, tiles in zip(lesions["slice"], lesions["tiles"], strict=True):
            assert {(patient, instance, int(t)) for t in tiles.split(",")} <= images
        # The lesion gallery, drawn by the patient's job, shows the classical score's lesions
        # among its candidates.
        log = (results / "logs" / "patient" / f"{patient}.log").read_text()
        assert re.search(rf"{patient}: \d+ candidate lesions, {len(lesions)} kept", log), log
        assert (results / "figures" / "lesions" / f"{patient}.png").stat().st_size > 0
    # Lesion-level evaluation against the true coronary calcium of every patient.
    (evaluation,) = pd.read_csv(results / "agatston" / "lesions_eval.tsv", sep="\t").to_dict(
        "records"
    )
    assert (evaluation["method"], evaluation["n_patients"]) == ("classical", len(TINY_PATIENTS))
    per_patient = pd.concat(
        pd.read_csv(results / "agatston" / "lesion_eval" / f"{p}.tsv", sep="\t")
        for p in TINY_PATIENTS
    )
    assert evaluation["true_lesions"] == per_patient["true_lesions"].sum() > 0
    assert evaluation["sensitivity"] == pytest.approx(
        per_patient["detected"].sum() / per_patient["true_lesions"].sum(), abs=1e-4
    )
    # The classical lesions' volume is the found volume of the patients' lesion tables.
    assert per_patient["found_volume_mm3"].sum() == pytest.approx(
        scores["volume_mm3"].astype(float).sum(), rel=1e-3
    )
    assert 0 < evaluation["sensitivity_volume"] <= 1 and 0 < evaluation["ppv_volume"] <= 1
    agreement = pd.read_csv(results / "agatston" / "agreement.tsv", sep="\t")
    assert agreement.loc[0, "method"] == "classical"
    assert evaluation["icc_agatston"] == pytest.approx(agreement.loc[0, "icc"], abs=1e-3)
    assert agreement.loc[0, "n_patients"] == len(TINY_PATIENTS)
    # Hybrid scores of each trained network on the test patients, beside the classical
    # scores of the same patients.
    n_test = (splits["split"] == "test").sum()
    for dataset in ("original", "segmented", "cropped"):
        hybrid = agreement.set_index("method").loc[f"hybrid:{dataset}/resnet50"]
        same = agreement.set_index("method").loc[
            f"classical, same patients as hybrid:{dataset}/resnet50"
        ]
        assert hybrid["n_patients"] == same["n_patients"] == n_test
    for figure in ("agatston_scatter.png", "agatston_bland_altman.png"):
        assert (results / "figures" / figure).stat().st_size > 0
    # The report's captions are workflow/report/*.rst with their fields filled.
    page = (results / "report" / "index.html").read_text()
    assert "of resnet50 on the segmented dataset." in page
    assert "Confusion matrices on the test images (threshold 0.5), counts and row" in page
    assert "{{" not in page and "``" not in page
    assert f"Candidate lesions of patient {TINY_PATIENTS[0]}: every lesion" in page

    # One trained network per dataset: it loads, predicts, and says what it expects.
    summary = pd.read_csv(results / "models" / "summary.tsv", sep="\t")
    assert sorted(summary["dataset"]) == sorted(sizes) and set(summary["model"]) == {"resnet50"}
    assert (summary["epochs_run"] == 2).all() and (summary["train_images_per_s"] > 0).all()
    # tiny.yaml's batches an epoch, not those the defaults give ResNet50 alone.
    assert (summary["steps_per_epoch"] == 3).all()
    model_path = results / "models" / "cropped" / "resnet50" / "model.keras"
    model = keras.saving.load_model(model_path)
    assert model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0).shape == (2, 2)
    assert read_preprocessing(model_path)["dataset"] == "cropped"
    # Every test image of every dataset is scored, and the metrics cover each split and level.
    metrics = pd.read_csv(results / "metrics.tsv", sep="\t")
    assert len(metrics) == 3 * 2 * 2
    test_patients = set(splits.loc[splits["split"] == "test", "patient_id"])
    for dataset in sizes:
        manifest = pd.read_csv(results / "datasets" / dataset / "manifest.tsv", sep="\t")
        expected = manifest["patient_id"].isin(test_patients).sum()
        row = metrics.query("dataset == @dataset and split == 'test' and level == 'image'")
        assert int(row["n_images"].iloc[0]) == expected
        assert row["accuracy_ci_low"].iloc[0] <= row["accuracy"].iloc[0]
    table3 = pd.read_csv(results / "tables" / "table3.tsv", sep="\t")
    assert table3["paper_accuracy"].notna().all()
    for figure in ("roc.png", "confusion.png", "gradcam/cropped.png"):
        assert (results / "figures" / figure).stat().st_size > 0
    assert (results / "figures" / "training_curves" / "original_resnet50.png").exists()

    assert planned_jobs(run_snakemake(tmp_path, "--dry-run")) == {}

    # A figure-only setting reruns the figures and the report, not training or scoring.
    tiny = yaml.safe_load(tiny_config.read_text())
    figures_only = tmp_path / "figures.yaml"
    figures_only.write_text(yaml.safe_dump({**tiny, "report": {"figure_dpi": 80}}))
    planned = planned_jobs(run_snakemake(tmp_path, "--dry-run", configfile=figures_only))
    assert planned == {"example_figure": 1, "report": 1, "all": 1}

    # A larger cohort adds patients; the ones already written stay as they are.
    larger = tmp_path / "larger.yaml"
    tiny["synthetic"] = {**tiny["synthetic"], "patients": 7}
    larger.write_text(yaml.safe_dump(tiny))
    proc = run_snakemake(tmp_path, "--dry-run", configfile=larger)
    assert planned_jobs(proc) == {
        **dict.fromkeys(PER_PATIENT, 1),
        **MERGED,
        "dataset_manifest": 3,
        **SPLITS,
        **TRAINING,
        "all": 1,
    }
