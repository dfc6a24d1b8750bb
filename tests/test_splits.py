"""Patient-level splits: sizes within one patient of the target, both classes everywhere,
risk categories spread, deterministic, and a clear error for a cohort too small."""

from collections import Counter

import numpy as np
import pytest

from cacflow.learning.splits import (
    SPLITS,
    Patient,
    SplitError,
    SplitSettings,
    patients_from_manifest,
    patients_from_truth,
    read_splits,
    split_patients,
)

RISK = ("1-10", "11-100", "101-400", ">400")


def cohort(n: int, seed: int = 0) -> list[Patient]:
    """Half without calcium (risk '0'), the others over the four risk categories."""
    rng = np.random.default_rng(seed)
    patients = []
    for i in range(n):
        calcium = bool(rng.random() < 0.5)
        risk = str(rng.choice(RISK)) if calcium else "0"
        patients.append(Patient(f"P{i:04d}", calcium, risk))
    return patients


@pytest.mark.parametrize("n", [40, 60, 203, 2300])
def test_split_sizes_within_one_patient_and_both_classes_everywhere(n):
    patients = cohort(n)
    rows = split_patients(patients, SplitSettings(), seed=42)
    assert [r["patient_id"] for r in rows] == sorted(p.patient_id for p in patients)
    sizes = Counter(r["split"] for r in rows)
    for split, fraction in zip(SPLITS, SplitSettings().fractions(), strict=True):
        assert abs(sizes[split] - n * fraction) < 1, (split, sizes)
        assert {r["calcium"] for r in rows if r["split"] == split} == {0, 1}


def test_risk_categories_are_spread_in_proportion():
    rows = split_patients(cohort(2300), SplitSettings(), seed=1)
    by_risk = Counter(r["risk_category"] for r in rows)
    for risk, n in by_risk.items():
        for split, fraction in zip(SPLITS, SplitSettings().fractions(), strict=True):
            got = sum(r["risk_category"] == risk and r["split"] == split for r in rows)
            assert abs(got - n * fraction) <= 2, (risk, split, got, n * fraction)


def test_deterministic_under_a_seed():
    patients = cohort(60)
    first = split_patients(patients, SplitSettings(), seed=7)
    assert split_patients(list(reversed(patients)), SplitSettings(), seed=7) == first
    assert split_patients(patients, SplitSettings(), seed=8) != first


def test_cohort_too_small_says_how_many_patients_are_needed():
    patients = [Patient(f"SYN000{i}", False, "0") for i in range(1, 5)]
    with pytest.raises(SplitError) as error:
        split_patients(patients, SplitSettings(), seed=42)
    message = str(error.value)
    assert "at least 3 patients with calcium and 3 without" in message
    assert "0 with calcium and 4 without" in message


def test_smallest_cohort_that_works_has_three_of_each_class():
    patients = [Patient(f"P{i}", i < 3, "") for i in range(6)]
    rows = split_patients(patients, SplitSettings(), seed=0)
    for split in SPLITS:
        assert sorted(r["calcium"] for r in rows if r["split"] == split) == [0, 1]


def test_bad_fractions_are_refused():
    with pytest.raises(SplitError, match="add up to 1"):
        SplitSettings(train=0.8, validation=0.2, test=0.1)


def test_patients_come_from_the_manifest_so_refused_studies_are_not_split():
    manifest = [
        {"patient_id": "A", "label": "no_calcium"},
        {"patient_id": "A", "label": "calcium"},
        {"patient_id": "B", "label": "no_calcium"},
    ]
    assert patients_from_manifest(manifest) == [Patient("A", True), Patient("B", False)]
    truth = [
        {"patient_id": "A", "agatston_total": "12.5", "risk_category": "11-100"},
        {"patient_id": "B", "agatston_total": "0.0", "risk_category": "0"},
        {"patient_id": "C", "agatston_total": "50", "risk_category": "11-100"},  # refused
    ]
    patients = patients_from_truth(truth, ["A", "B"])
    assert [p.patient_id for p in patients] == ["A", "B"]
    assert patients[0] == Patient("A", True, "11-100")


def test_read_splits_refuses_an_unknown_split():
    assert read_splits([{"patient_id": "A", "split": "test"}]) == {"A": "test"}
    with pytest.raises(SplitError, match="unknown split"):
        read_splits([{"patient_id": "A", "split": "holdout"}])


@pytest.mark.slow
def test_workflow_stops_with_the_error_on_a_cohort_too_small(tmp_path, run_snakemake):
    # Four patients of seed 2021 at 96 px, none with coronary calcium: no split can hold both
    # classes.
    config = tmp_path / "small.yaml"
    config.write_text("synthetic: {patients: 4, seed: 2021, size: 96}\n")
    proc = run_snakemake(tmp_path, "results/splits/patients.tsv", configfile=config, check=False)
    assert proc.returncode != 0
    log = (tmp_path / "results" / "logs" / "make_splits.log").read_text()
    assert "at least 3 patients with calcium and 3 without are needed" in log
    assert not (tmp_path / "results" / "splits" / "patients.tsv").exists()
