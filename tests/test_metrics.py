"""Evaluation (cacflow.reporting.metrics, cacflow.reporting.paper, cacflow.reporting.eval_figures): metrics hand-computed on
a tiny example, the per-patient call, patient bootstrap intervals, the metrics table, the
comparison with the paper's Table 3, and the figures."""

import itertools
import math

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cacflow.reporting.eval_figures import (
    confusions_from_rows,
    plot_confusion_matrices,
    plot_roc_curves,
    plot_training_curves,
)
from cacflow.reporting.metrics import (
    METRIC_COLUMNS,
    METRICS,
    MetricsError,
    bootstrap_intervals,
    image_metrics,
    metrics_rows,
    patient_level,
)
from cacflow.reporting.paper import TABLE1, TABLE3_COMPARISON_COLUMNS, TABLE3_PCT, table3_comparison
from cacflow.tables import read_tsv, write_tsv

# Three patients, eight images. Calcium is called when P(calcium) > 0.5.
#   image        0    1    2    3    4    5     6    7
#   patient      A    A    A    B    B    B     C    C
#   label        0    0    1    0    0    0     1    1
#   P(calcium)  .10  .60  .80  .20  .30  .45  .70  .45
#   called       0    1    1    0    0    0     1    0
#   outcome     TN   FP   TP   TN   TN   TN    TP   FN
PATIENTS = ["A", "A", "A", "B", "B", "B", "C", "C"]
LABELS = [0, 0, 1, 0, 0, 0, 1, 1]
PROBABILITIES = [0.10, 0.60, 0.80, 0.20, 0.30, 0.45, 0.70, 0.45]


def assert_same(a: float, b: float) -> None:
    """Equal, or both NaN."""
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), (a, b)


def test_image_metrics_by_hand():
    m = image_metrics(LABELS, PROBABILITIES)
    # tn = images 0, 3, 4, 5; fp = 1; fn = 7; tp = 2, 6.
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (4, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(6 / 8)  # (tp + tn) / 8
    assert m["sensitivity"] == pytest.approx(2 / 3)  # tp / (tp + fn)
    assert m["specificity"] == pytest.approx(4 / 5)  # tn / (tn + fp)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)  # = 11/15
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # 2tp / (2tp + fp + fn) = 2/3
    # AUC over the 3 x 5 (positive, negative) pairs: .80 and .70 beat all 5 negatives;
    # .45 beats .10, .20, .30, loses to .60 and ties .45 (one half): (5 + 5 + 3.5) / 15.
    assert m["roc_auc"] == pytest.approx(13.5 / 15)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(LABELS, PROBABILITIES))


def test_threshold_and_label_names():
    # 0.5 is not above the threshold: no_calcium, as the argmax of a (0.5, 0.5) softmax.
    assert image_metrics([1, 0], [0.5, 0.2])["fn"] == 1
    assert image_metrics([1, 0], [0.5, 0.2], threshold=0.4)["tp"] == 1
    named = ["calcium" if y else "no_calcium" for y in LABELS]
    assert image_metrics(named, PROBABILITIES) == image_metrics(LABELS, PROBABILITIES)
    with pytest.raises(MetricsError, match="unknown labels"):
        image_metrics(["calcium", "maybe"], [0.1, 0.2])
    with pytest.raises(MetricsError, match="2 labels but 3"):
        image_metrics([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(MetricsError, match=r"\[0, 1\]"):
        image_metrics([0, 1], [0.1, 1.2])


def test_one_class_gives_nan_auc():
    m = image_metrics([0, 0, 0], [0.1, 0.7, 0.2])
    assert math.isnan(m["roc_auc"]) and math.isnan(m["sensitivity"])
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)  # the class present, as sklearn
    assert m["f1"] == 0.0  # 2tp / (2tp + fp + fn) = 0 / 1
    assert math.isnan(image_metrics([0, 0], [0.1, 0.2])["f1"])  # 0 / 0


def test_patient_level_by_hand():
    ids, labels, probabilities = patient_level(PATIENTS, LABELS, PROBABILITIES)
    # A: labels 0 0 1 -> 1, max(.10, .60, .80) = .80; B: 0 0 0 -> 0, max(.20, .30, .45) = .45;
    # C: 1 1 -> 1, max(.70, .45) = .70.
    assert list(ids) == ["A", "B", "C"]
    assert list(labels) == [1, 0, 1]
    assert list(probabilities) == pytest.approx([0.80, 0.45, 0.70])
    m = image_metrics(labels, probabilities)
    # Called 1, 0, 1: tp = A, C; tn = B. AUC: .80 and .70 both beat .45.
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (1, 0, 0, 2)
    assert m["accuracy"] == m["sensitivity"] == m["specificity"] == m["f1"] == 1.0
    assert m["roc_auc"] == 1.0


@pytest.mark.parametrize("level", ["image", "patient"])
def test_each_resample_is_a_multiset_of_patients(level):
    """With one resample, the "interval" is the metrics of that resample: they must be those
    of one of the 10 multisets of 3 patients (a patient drawn twice counts twice)."""
    images = {p: [i for i, q in enumerate(PATIENTS) if q == p] for p in "ABC"}
    possible = []
    for draw in itertools.combinations_with_replacement("ABC", 3):
        idx = [i for p in draw for i in images[p]]
        ids = [f"{p}{k}" for k, p in enumerate(draw) for _ in images[p]]  # duplicates apart
        y = np.array(LABELS)[idx]
        prob = np.array(PROBABILITIES)[idx]
        if level == "patient":
            _, y, prob = patient_level(ids, y, prob)
        possible.append(image_metrics(y, prob))
    for seed in range(12):
        got = bootstrap_intervals(PATIENTS, LABELS, PROBABILITIES, level, n_boot=1, seed=seed)
        matches = [
            all(
                (math.isnan(m[k]) and math.isnan(got[k][0])) or m[k] == pytest.approx(got[k][0])
                for k in METRICS
            )
            for m in possible
        ]
        assert any(matches), (seed, got)


def test_bootstrap_is_deterministic_for_a_seed():
    a = bootstrap_intervals(PATIENTS, LABELS, PROBABILITIES, "image", n_boot=200, seed=7)
    b = bootstrap_intervals(PATIENTS, LABELS, PROBABILITIES, "image", n_boot=200, seed=7)
    c = bootstrap_intervals(PATIENTS, LABELS, PROBABILITIES, "image", n_boot=200, seed=8)
    assert a == b
    assert a != c
    assert set(a) == set(METRICS)


def test_one_class_resamples_do_not_crash():
    # Two patients, one negative, one positive: a quarter of the resamples draw B twice
    # (no calcium: AUC and sensitivity undefined), a quarter A twice (no negative).
    ids, labels, probabilities = ["A", "A", "B", "B"], [1, 0, 0, 0], [0.9, 0.2, 0.1, 0.6]
    for level in ("image", "patient"):
        ci = bootstrap_intervals(ids, labels, probabilities, level, n_boot=200)
        assert all(np.isfinite(ci["roc_auc"])) and ci["roc_auc"][0] <= ci["roc_auc"][1]
    # One class everywhere: AUC undefined in every resample, specificity 1/2 in each (each
    # patient has one image called calcium, .9 and .6).
    ci = bootstrap_intervals(ids, [0, 0, 0, 0], probabilities, "image", n_boot=50)
    assert all(math.isnan(v) for v in ci["roc_auc"] + ci["sensitivity"])
    assert ci["specificity"] == (0.5, 0.5)


def random_cohort(n_patients: int, seed: int):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(5, 40, size=n_patients)
    ids = np.repeat([f"P{i:04d}" for i in range(n_patients)], sizes)
    # A patient's slices share its calcium status more often than not.
    patient_calcium = rng.random(n_patients) < 0.5
    labels = (np.repeat(patient_calcium, sizes) & (rng.random(ids.size) < 0.6)).astype(int)
    probabilities = np.clip(0.35 * labels + rng.normal(0.35, 0.2, ids.size), 0, 1)
    return ids, labels, probabilities


@pytest.mark.parametrize("level", ["image", "patient"])
def test_interval_contains_the_estimate(level):
    ids, labels, probabilities = random_cohort(120, seed=3)
    if level == "patient":
        _, y, p = patient_level(ids, labels, probabilities)
        point = image_metrics(y, p)
    else:
        point = image_metrics(labels, probabilities)
    ci = bootstrap_intervals(ids, labels, probabilities, level, n_boot=500, seed=1)
    for m in METRICS:
        low, high = ci[m]
        assert low <= point[m] <= high, (m, low, point[m], high)
        assert high - low < 0.5


def test_metrics_rows_and_table(tmp_path):
    rows = metrics_rows("cropped", "resnet50", "test", PATIENTS, LABELS, PROBABILITIES, n_boot=100)
    assert [r["level"] for r in rows] == ["image", "patient"]
    image, patient = rows
    assert set(image) == set(METRIC_COLUMNS)
    assert (image["n_images"], image["n_patients"]) == (8, 3)
    assert (patient["n_images"], patient["n_patients"]) == (8, 3)
    assert image["accuracy"] == pytest.approx(6 / 8) and patient["accuracy"] == 1.0
    assert (image["tn"], image["fp"], image["fn"], image["tp"]) == (4, 1, 1, 2)
    assert (patient["tn"], patient["fp"], patient["fn"], patient["tp"]) == (1, 0, 0, 2)
    assert image["accuracy_ci_low"] <= image["accuracy"] <= image["accuracy_ci_high"]
    path = tmp_path / "metrics.tsv"
    write_tsv(path, rows, METRIC_COLUMNS)
    back = read_tsv(path)
    assert list(back[0]) == list(METRIC_COLUMNS)
    assert float(back[0]["roc_auc"]) == pytest.approx(0.9)


def test_paper_tables():
    assert [r["parameters"] for r in TABLE1] == ["1.46 m", "23.53 m", "118.25 m"]
    assert [r["inference_ms_per_image"] for r in TABLE1] == [24, 74, 102]
    assert {r["gpu"] for r in TABLE1} == {"NVIDIA GeForce RTX 2080"}
    assert len(TABLE3_PCT) == 9
    assert TABLE3_PCT[("original", "resnet50")] == (88.95, 81.08)
    assert TABLE3_PCT[("segmented", "vgg16")] == (89.31, 73.25)
    assert TABLE3_PCT[("cropped", "resnet50")] == (99.08, 98.52)
    assert TABLE3_PCT[("cropped", "inception_resnet_v2")] == (87.53, 80.23)


def test_table3_comparison(tmp_path):
    rows = metrics_rows("cropped", "resnet50", "test", PATIENTS, LABELS, PROBABILITIES, n_boot=50)
    rows += metrics_rows("cropped", "resnet50", "validation", PATIENTS, LABELS, [0.9] * 8)
    path = tmp_path / "metrics.tsv"
    write_tsv(path, rows, METRIC_COLUMNS)
    comparison = table3_comparison(read_tsv(path))  # as strings, as read back
    assert len(comparison) == 9 and all(
        list(r) == list(TABLE3_COMPARISON_COLUMNS) for r in comparison
    )
    ours = next(r for r in comparison if (r["dataset"], r["model"]) == ("cropped", "resnet50"))
    assert ours["paper_accuracy"] == pytest.approx(0.9852)
    assert ours["our_accuracy"] == pytest.approx(6 / 8)  # test split, image level
    assert ours["our_ci_low"] <= ours["our_accuracy"] <= ours["our_ci_high"]
    missing = next(r for r in comparison if (r["dataset"], r["model"]) == ("original", "vgg16"))
    assert missing["paper_accuracy"] == pytest.approx(0.6123)
    assert math.isnan(missing["our_accuracy"])


def assert_png(path, min_width: int, min_height: int) -> None:
    with Image.open(path) as png:
        png.verify()
    with Image.open(path) as png:
        assert png.format == "PNG"
        assert png.width >= min_width and png.height >= min_height
    assert path.stat().st_size > 10_000
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def test_roc_figure(tmp_path):
    _, labels, probabilities = random_cohort(20, seed=5)
    curves = {
        "original": {"resnet50": (labels, probabilities), "vgg16": (labels, 1 - probabilities)},
        "cropped": {"resnet50": (LABELS, PROBABILITIES), "vgg16": ([0, 0], [0.2, 0.4])},
    }
    out = tmp_path / "figures" / "roc.png"
    plot_roc_curves(curves, out)
    assert_png(out, 600, 300)


def test_confusion_figure(tmp_path):
    rows = metrics_rows("cropped", "resnet50", "test", PATIENTS, LABELS, PROBABILITIES, n_boot=10)
    rows += metrics_rows("original", "vgg16", "test", PATIENTS, LABELS, [0.9] * 8, n_boot=10)
    matrices = confusions_from_rows(rows)
    assert matrices["cropped"]["resnet50"].tolist() == [[4, 1], [1, 2]]
    out = tmp_path / "figures" / "confusion.png"
    plot_confusion_matrices(matrices, out)
    assert_png(out, 500, 500)


def test_training_curves_figure(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n"
        + "".join(
            f"{e},{0.5 + 0.04 * e},{0.7 - 0.05 * e},{0.5 + 0.03 * e},{0.72 - 0.04 * e}\n"
            for e in range(10)
        )
    )
    out = tmp_path / "figures" / "training.png"
    plot_training_curves(history, out, title="cropped / resnet50")
    assert_png(out, 800, 300)
