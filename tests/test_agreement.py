"""ICC, weighted kappa and Bland-Altman against values published or computed by hand, the
agreement table, and the Agatston figures."""

import math

import numpy as np
import pytest
from PIL import Image

from cacflow.reporting.agatston_figures import draw_bland_altman, draw_scatter, scores_by_method
from cacflow.scoring.agatston import risk_category
from cacflow.scoring.agreement import (
    AGREEMENT_COLUMNS,
    agreement_rows,
    agreement_statistics,
    bland_altman,
    bootstrap_agreement,
    icc_a1,
    weighted_kappa,
)

# Shrout & Fleiss 1979, Table 2: 6 targets rated by 4 judges.
SHROUT_FLEISS = [
    [9, 2, 5, 8],
    [6, 1, 3, 2],
    [8, 4, 6, 8],
    [7, 1, 2, 6],
    [10, 5, 6, 9],
    [6, 2, 4, 7],
]


def test_icc_of_shrout_and_fleiss_table():
    # Their Table 4: ICC(2,1) = .29 (= McGraw & Wong's ICC(A,1)).
    assert icc_a1(SHROUT_FLEISS) == pytest.approx(0.29, abs=0.005)


def test_icc_by_hand_on_two_raters():
    """Ratings [[1, 2], [3, 3], [5, 7]]: grand mean 3.5; subject means 1.5, 3, 6 give
    SSR = 2 (4 + 0.25 + 6.25) = 21, MSR = 10.5; rater means 3, 4 give SSC = 3 (0.25 + 0.25)
    = 1.5, MSC = 1.5; SST = 23.5, so SSE = 1, MSE = 1 / (2 x 1) = 0.5.
    ICC(A,1) = (10.5 - 0.5) / (10.5 + 0.5 + 2 (1.5 - 0.5) / 3) = 10 / (35 / 3) = 6 / 7."""
    assert icc_a1([[1, 2], [3, 3], [5, 7]]) == pytest.approx(6 / 7)


def test_icc_absolute_agreement_penalises_a_constant_offset():
    truth = np.array([0.0, 10, 50, 200, 800])
    assert icc_a1(np.column_stack([truth, truth])) == pytest.approx(1.0)
    # A consistency ICC would stay 1; absolute agreement falls as the offset grows.
    small, large = (icc_a1(np.column_stack([truth + d, truth])) for d in (100, 300))
    assert large < small < 1.0
    assert math.isnan(icc_a1([[1.0, 1.0]]))  # one patient
    assert math.isnan(icc_a1([[0.0, 0.0], [0.0, 0.0]]))  # no variance


def test_linear_kappa_by_hand_on_three_categories():
    """Rater A in rows, B in columns, 10 subjects:
        [[3, 1, 0],
         [1, 2, 1],
         [0, 0, 2]]
    Linear weights: 1 on the diagonal, 0.5 one category apart, 0 two apart.
    Observed: (3 + 2 + 2) / 10 + 0.5 (1 + 1 + 1) / 10 = 0.85.
    Marginals A (0.4, 0.4, 0.2), B (0.4, 0.3, 0.3); expected: diagonal 0.16 + 0.12 + 0.06 =
    0.34, one apart 0.5 (0.12 + 0.16 + 0.12 + 0.06) = 0.23, total 0.57.
    kappa = (0.85 - 0.57) / (1 - 0.57) = 28 / 43."""
    cells = {("a", "a"): 3, ("a", "b"): 1, ("b", "a"): 1, ("b", "b"): 2, ("b", "c"): 1}
    cells[("c", "c")] = 2
    pairs = [pair for pair, count in cells.items() for _ in range(count)]
    rater_a, rater_b = zip(*pairs, strict=True)
    assert weighted_kappa(rater_a, rater_b, ["a", "b", "c"]) == pytest.approx(28 / 43)
    # The same as scikit-learn's.
    from sklearn.metrics import cohen_kappa_score

    assert cohen_kappa_score(rater_a, rater_b, weights="linear") == pytest.approx(28 / 43)


def test_unused_risk_categories_still_set_the_weights():
    """A = (0, 1-10, >400, >400), B = (1-10, 1-10, 1-10, >400): indices 0, 1, 4, 4 and
    1, 1, 1, 4 of the five categories. Linear kappa = 1 - mean observed distance / mean
    distance over all pairs = 1 - (1 + 0 + 3 + 0) / 4 / (28 / 16) = 3 / 7. Leaving out the
    unused 11-100 and 101-400 (indices 0, 1, 2) would give 1 - 0.5 / 0.75 = 1 / 3."""
    rater_a = ["0", "1-10", ">400", ">400"]
    rater_b = ["1-10", "1-10", "1-10", ">400"]
    assert weighted_kappa(rater_a, rater_b) == pytest.approx(3 / 7)
    assert weighted_kappa(rater_a, rater_b, ["0", "1-10", ">400"]) == pytest.approx(1 / 3)


def test_kappa_of_perfect_agreement_and_undefined_cases():
    categories = ["0", "1-10", "11-100", "101-400", ">400", "0"]
    assert weighted_kappa(categories, categories) == pytest.approx(1.0)
    assert math.isnan(weighted_kappa(["0", "0"], ["0", "0"]))  # one category: undefined
    with pytest.raises(ValueError, match="not among"):
        weighted_kappa(["0", "huge"], ["0", "0"])


def test_bland_altman_by_hand():
    # Differences 1, 0, 1, -2: mean 0, SD sqrt(6 / 3), limits +- 1.96 sqrt(2).
    limits = bland_altman([1, 2, 3, 4], [0, 2, 2, 6])
    assert (limits.n, limits.mean, limits.sd) == (4, 0.0, pytest.approx(math.sqrt(2)))
    assert limits.loa_low == pytest.approx(-1.96 * math.sqrt(2))
    assert limits.loa_high == pytest.approx(1.96 * math.sqrt(2))


def score_rows():
    truth = [(0, "0"), (5, "1-10"), (50, "11-100"), (250, "101-400"), (900, ">400")]
    rows = []
    for i, (score, category) in enumerate(truth):
        common = {"patient_id": f"P{i}", "truth_agatston": str(score)}
        common["truth_risk_category"] = category
        rows.append({**common, "method": "classical", "agatston": str(score)})
        rows[-1]["risk_category"] = category
        # A method that adds 20 points to everyone: 0 -> 11-100, 5 -> 11-100.
        over = {"0": "11-100", "1-10": "11-100"}.get(category, category)
        rows.append({**common, "method": "plus20", "agatston": str(score + 20)})
        rows[-1]["risk_category"] = over
    # A patient without a truth (own data) is left out.
    rows.append({"patient_id": "X", "method": "classical", "agatston": "3", "risk_category": "1-10",
                 "truth_agatston": "", "truth_risk_category": ""})  # fmt: skip
    return rows


def test_agreement_table_rows():
    perfect, offset = agreement_rows(score_rows())
    assert list(perfect) == list(AGREEMENT_COLUMNS)
    assert perfect == {
        "method": "classical",
        "n_patients": 5,
        "icc": "1.0000",
        "kappa_linear": "1.0000",
        "bland_altman_mean": "0.0000",
        "loa_low": "0.0000",
        "loa_high": "0.0000",
        "category_accuracy": "1.0000",
    }
    assert offset["method"] == "plus20" and offset["n_patients"] == 5
    assert offset["bland_altman_mean"] == "20.0000"
    assert offset["category_accuracy"] == "0.6000"
    assert 0.9 < float(offset["icc"]) < 1.0
    # Two of five one category up (distances 2 and 1 on the scale of 4): kappa below 1.
    assert float(offset["kappa_linear"]) < 1.0
    # No truth at all: the method is listed with empty statistics.
    (empty,) = agreement_rows([r for r in score_rows() if r["patient_id"] == "X"])
    assert empty["n_patients"] == 0 and empty["icc"] == "" and empty["kappa_linear"] == ""


def test_figures_are_drawn(tmp_path):
    scores = scores_by_method(score_rows())
    assert list(scores) == ["classical", "plus20"]
    assert len(scores["classical"][0]) == 5
    draw_scatter(scores, tmp_path / "scatter.png")
    draw_bland_altman(scores, tmp_path / "ba.png")
    draw_bland_altman({}, tmp_path / "empty.png")
    for name in ("scatter.png", "ba.png", "empty.png"):
        with Image.open(tmp_path / name) as image:
            assert image.size[0] > 300
    with Image.open(tmp_path / "scatter.png") as one, Image.open(tmp_path / "empty.png") as none:
        assert one.size[0] > none.size[0]  # two panels side by side


def test_a_true_score_of_zero_counts():
    # Numbers, not table strings: 0.0 is a true score, only None or "" is none.
    rows = [
        {"method": "m", "agatston": a, "risk_category": c, "truth_agatston": t,
         "truth_risk_category": tc}
        for a, c, t, tc in [(0.0, "0", 0.0, "0"), (50.0, "11-100", 40.0, "11-100"),
                            (3.0, "1-10", None, "")]
    ]  # fmt: skip
    (row,) = agreement_rows(rows)
    assert row["n_patients"] == 2 and row["bland_altman_mean"] == "5.0000"
    assert len(scores_by_method(rows)["m"][1]) == 2


def test_a_method_on_part_of_the_cohort_is_compared_with_classical_on_the_same_patients():
    def row(patient, method, score, truth):
        return {
            "patient_id": patient,
            "method": method,
            "agatston": score,
            "risk_category": risk_category(score),
            "truth_agatston": truth,
            "truth_risk_category": risk_category(truth),
        }

    rows = [
        row("A", "classical", 50.0, 10.0),
        row("B", "classical", 0.0, 0.0),
        row("C", "classical", 500.0, 450.0),
        row("A", "hybrid:cropped/vgg16", 10.0, 10.0),
        row("B", "hybrid:cropped/vgg16", 0.0, 0.0),
    ]
    table = agreement_rows(rows)
    assert [r["method"] for r in table] == [
        "classical",
        "classical, same patients as hybrid:cropped/vgg16",
        "hybrid:cropped/vgg16",
    ]
    assert [r["n_patients"] for r in table] == [3, 2, 2]
    # On A and B, classical is 40 points high on A only: mean difference 20.
    assert float(table[1]["bland_altman_mean"]) == pytest.approx(20.0)
    assert float(table[2]["bland_altman_mean"]) == pytest.approx(0.0)


def test_bootstrap_intervals_hold_the_estimate_and_narrow_with_patients():
    rng = np.random.default_rng(3)
    truth = rng.gamma(0.6, 300, size=80)
    predicted = truth * rng.normal(1.0, 0.15, size=80) + rng.normal(0, 10, size=80)
    categories = [[risk_category(v) for v in values] for values in (predicted, truth)]
    point = agreement_statistics(predicted, truth, *categories)
    wide = bootstrap_agreement(predicted[:20], truth[:20], categories[0][:20], categories[1][:20])
    narrow = bootstrap_agreement(predicted, truth, *categories)
    for key, (low, high) in narrow.items():
        assert low <= point[key] <= high, key
        assert high - low < wide[key][1] - wide[key][0], key
    # Same seed, same interval; perfect agreement, a point.
    assert bootstrap_agreement(predicted, truth, *categories) == narrow
    exact = bootstrap_agreement(truth, truth, categories[1], categories[1], samples=50)
    assert exact["category_accuracy"] == (1.0, 1.0)
    assert exact["icc"] == pytest.approx((1.0, 1.0))
