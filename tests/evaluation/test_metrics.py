"""Tests for skinonnx.evaluation.metrics: hand-computed cases, scikit-learn on random data, brute pAUC."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from skinonnx.evaluation import metrics as m

# --------------------------------------------------------------------------- hand case A
# y_true   1    1    1    0    0    0    0    0
# y_prob  .9   .6   .3   .7   .4   .2   .1   .05      threshold 0.5 -> pred 1 1 0 1 0 0 0 0
# TP = 2 (.9, .6), FN = 1 (.3), FP = 1 (.7), TN = 4
HAND_Y = [1, 1, 1, 0, 0, 0, 0, 0]
HAND_P = [0.9, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.05]
HAND_EXPECTED = {
    "accuracy": 6 / 8,  # (TP + TN) / N = (2 + 4) / 8
    "sensitivity": 2 / 3,  # TP / (TP + FN)
    "specificity": 4 / 5,  # TN / (TN + FP)
    "balanced_accuracy": (2 / 3 + 4 / 5) / 2,
    "ppv": 2 / 3,  # TP / (TP + FP)
    "npv": 4 / 5,  # TN / (TN + FN)
    "f1": 4 / 6,  # 2TP / (2TP + FP + FN) = 4 / (4 + 1 + 1)
    # AUC = pairs (pos > neg) / (3 * 5): .9 beats all 5 negatives, .6 beats .4 .2 .1 .05 (4),
    # .3 beats .2 .1 .05 (3) -> 12 / 15
    "roc_auc": 12 / 15,
    # ranking .9P .7N .6P .4N .3P ...: precision at each positive 1/1, 2/3, 3/5
    # AP = (1 + 2/3 + 3/5) / 3 = 34/45
    "average_precision": (1 + 2 / 3 + 3 / 5) / 3,
    # ROC: (0,0) (0,1/3) (.2,1/3) (.2,2/3) (.4,2/3) (.4,1) ... (1,1) as (FPR, TPR).
    # Above TPR .8 the curve is the vertical segment at FPR .4: area = (1 - .8) * (1 - .4)
    "pauc_80": 0.2 * 0.6,
    # ISIC 2018-2019: the curve first reaches TPR .8 at FPR .4 (same vertical segment); from there to
    # FPR 1 the curve is at TPR 1: area = (1 - .4) * 1
    "auc_sens_80": 0.6,
}


def test_hand_case_every_metric() -> None:
    pred = (np.asarray(HAND_P) >= 0.5).astype(int)
    assert m.confusion(HAND_Y, pred) == m.ConfusionCounts(tp=2, fp=1, tn=4, fn=1)
    singles = {
        "accuracy": m.accuracy(HAND_Y, pred),
        "balanced_accuracy": m.balanced_accuracy(HAND_Y, pred),
        "sensitivity": m.sensitivity(HAND_Y, pred),
        "specificity": m.specificity(HAND_Y, pred),
        "ppv": m.ppv(HAND_Y, pred),
        "npv": m.npv(HAND_Y, pred),
        "f1": m.f1(HAND_Y, pred),
        "roc_auc": m.roc_auc(HAND_Y, HAND_P),
        "average_precision": m.average_precision(HAND_Y, HAND_P),
        "pauc_80": m.partial_roc_auc_above_sensitivity(HAND_Y, HAND_P),
        "auc_sens_80": m.auc_above_sensitivity(HAND_Y, HAND_P),
    }
    for name, expected in HAND_EXPECTED.items():
        assert singles[name] == pytest.approx(expected, abs=1e-12), name

    report = m.binary_metrics(HAND_Y, HAND_P, 0.5)
    assert set(report) == set(m.METRIC_NAMES) | {"threshold", "n", "n_positive", "confusion"}
    for name, expected in HAND_EXPECTED.items():
        assert report[name] == pytest.approx(expected, abs=1e-12), name
    assert report["threshold"] == 0.5
    assert report["n"] == 8 and report["n_positive"] == 3
    assert report["confusion"] == {"tn": 4, "fp": 1, "fn": 1, "tp": 2}
    assert all(isinstance(v, int) for v in report["confusion"].values())


def test_confusion_matrix_layout_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 50)
    pred = rng.integers(0, 2, 50)
    counts = m.confusion(y, pred)
    assert counts.matrix() == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()


def test_threshold_is_inclusive() -> None:
    # prob == threshold counts as positive
    report = m.binary_metrics([1, 0], [0.5, 0.49], 0.5)
    assert report["confusion"] == {"tn": 1, "fp": 0, "fn": 0, "tp": 1}


# --------------------------------------------------------------------------- vs scikit-learn


def _random_case(seed: int, n: int, ties: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0.0, 1.0)
    if ties:
        p = np.round(p, 1)  # heavy ties, including across classes
    return y, p


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_against_sklearn_on_random_data(seed: int, ties: bool) -> None:
    y, p = _random_case(seed, 150, ties)
    for thr in (0.3, 0.5, 0.7):
        pred = (p >= thr).astype(int)
        report = m.binary_metrics(y, p, thr)
        expected = {
            "accuracy": skm.accuracy_score(y, pred),
            "balanced_accuracy": skm.balanced_accuracy_score(y, pred),
            "sensitivity": skm.recall_score(y, pred),
            "specificity": skm.recall_score(y, pred, pos_label=0),
            "ppv": skm.precision_score(y, pred, zero_division=np.nan),
            "npv": skm.precision_score(y, pred, pos_label=0, zero_division=np.nan),
            "f1": skm.f1_score(y, pred),
            "roc_auc": skm.roc_auc_score(y, p),
            "average_precision": skm.average_precision_score(y, p),
        }
        for name, value in expected.items():
            assert report[name] == pytest.approx(value, abs=1e-12, nan_ok=True), (name, thr)
        assert m.confusion(y, pred).matrix() == skm.confusion_matrix(y, pred).tolist()


# --------------------------------------------------------------------------- partial AUC


def brute_force_pauc(y: np.ndarray, p: np.ndarray, min_tpr: float, grid: int = 400_000) -> float:
    """Dense midpoint integration of the ROC *step* function over TPR in [min_tpr, 1].

    Valid for data without tied scores, where the ROC curve is a staircase: at sensitivity
    level s the curve sits at the smallest FPR among thresholds reaching TPR >= s.
    """
    pos, neg = p[y == 1], p[y == 0]
    thresholds = np.r_[np.inf, np.unique(p)]
    tpr = np.array([(pos >= t).mean() for t in thresholds])
    fpr = np.array([(neg >= t).mean() for t in thresholds])
    order = np.argsort(tpr, kind="stable")
    tpr, fpr = tpr[order], fpr[order]
    suffix_min_fpr = np.minimum.accumulate(fpr[::-1])[::-1]
    levels = min_tpr + (np.arange(grid) + 0.5) * (1.0 - min_tpr) / grid
    at_level = suffix_min_fpr[np.searchsorted(tpr, levels, side="left")]
    return float(np.mean(1.0 - at_level) * (1.0 - min_tpr))


def swapped_axes_pauc(y: np.ndarray, p: np.ndarray, min_tpr: float) -> float:
    """The ISIC challenge recipe: swap classes and negate scores, then raw AUC up to max_fpr."""
    fpr, tpr, _ = skm.roc_curve(1 - y, -p)
    max_fpr = 1.0 - min_tpr
    stop = np.searchsorted(fpr, max_fpr, "right")
    y_at = np.interp(max_fpr, fpr[stop - 1 : stop + 1], tpr[stop - 1 : stop + 1])
    return float(skm.auc(np.append(fpr[:stop], max_fpr), np.append(tpr[:stop], y_at)))


def test_pauc_perfect_classifier_is_two_tenths() -> None:
    y = np.array([0] * 7 + [1] * 5)
    p = np.linspace(0.01, 0.99, 12)  # every positive above every negative
    assert m.partial_roc_auc_above_sensitivity(y, p) == pytest.approx(0.2, abs=1e-12)
    assert brute_force_pauc(y, p, 0.8) == pytest.approx(0.2, abs=1e-9)
    # ... while sklearn's McClish-standardised max_fpr variant would say 1.0: not what we report
    assert skm.roc_auc_score(1 - y, -p, max_fpr=0.2) == pytest.approx(1.0)


def test_pauc_inverted_classifier_is_zero() -> None:
    y = np.array([1] * 5 + [0] * 7)
    p = np.linspace(0.01, 0.99, 12)  # every positive below every negative
    assert m.partial_roc_auc_above_sensitivity(y, p) == pytest.approx(0.0, abs=1e-12)


def test_pauc_hand_case_with_tie_interpolation() -> None:
    # positives .9 .8 .7 .5 .5, negatives .5 .5 .3 .2  (5 pos, 4 neg)
    # ROC (FPR, TPR): (0,0) (0,.2) (0,.4) (0,.6) then the tie at .5 adds 2 P + 2 N at once:
    # a diagonal to (.5, 1), then (.75, 1) (1, 1).
    # On the diagonal FPR = (TPR - .6) / .4 * .5, so FPR(.8) = .25 and FPR(1) = .5; the area
    # between TPR .8 and 1 right of the curve = .2 * (1 - (.25 + .5) / 2) = .125
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.5, 0.5, 0.5, 0.5, 0.3, 0.2])
    assert m.partial_roc_auc_above_sensitivity(y, p) == pytest.approx(0.125, abs=1e-12)
    assert swapped_axes_pauc(y, p, 0.8) == pytest.approx(0.125, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_pauc_random_classifier_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    y = rng.integers(0, 2, 400)
    p = rng.random(400)  # uninformative scores, no ties
    ours = m.partial_roc_auc_above_sensitivity(y, p)
    assert ours == pytest.approx(brute_force_pauc(y, p, 0.8), abs=2e-4)
    assert ours == pytest.approx(0.02, abs=0.015)  # chance level is (1 - .8)^2 / 2


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("min_tpr", [0.8, 0.5, 0.93])
def test_pauc_decent_classifier_matches_brute_force_and_isic_recipe(
    seed: int, min_tpr: float
) -> None:
    y, p = _random_case(seed, 300, ties=False)
    ours = m.partial_roc_auc_above_sensitivity(y, p, min_tpr)
    assert ours == pytest.approx(brute_force_pauc(y, p, min_tpr), abs=2e-4)
    assert ours == pytest.approx(swapped_axes_pauc(y, p, min_tpr), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_pauc_with_ties_matches_isic_recipe(seed: int) -> None:
    y, p = _random_case(seed, 300, ties=True)
    expected = swapped_axes_pauc(y, p, 0.8)
    assert m.partial_roc_auc_above_sensitivity(y, p) == pytest.approx(expected, abs=1e-12)


def isic2019_auc_sens(y: np.ndarray, p: np.ndarray, min_tpr: float) -> float:
    """The ISIC 2018-2019 scorer's recipe (isic-challenge-scoring ``auc_above_sensitivity``), restated:
    full ROC polyline, a point inserted where TPR first reaches ``min_tpr``, trapezoids of TPR over FPR."""
    fpr, tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    i = int(np.searchsorted(tpr, min_tpr, side="left"))
    f = np.interp(min_tpr, tpr[i - 1 : i + 1], fpr[i - 1 : i + 1])
    return float(skm.auc(np.r_[f, fpr[i:]], np.r_[min_tpr, tpr[i:]]))


def test_auc_sens_80_hand_cases_and_limits() -> None:
    # The tie case above: the diagonal (0, .6) -> (.5, 1) reaches TPR .8 at FPR .25; area from there:
    # trapezoid (.25, .8) -> (.5, 1) = .25 * .9 = .225, then TPR 1 from FPR .5 to 1 = .5: total .725
    y = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.5, 0.5, 0.5, 0.5, 0.3, 0.2])
    assert m.auc_above_sensitivity(y, p) == pytest.approx(0.725, abs=1e-12)
    assert isic2019_auc_sens(y, p, 0.8) == pytest.approx(0.725, abs=1e-12)
    perfect = np.linspace(0.01, 0.99, 12)
    y_sorted = np.array([0] * 7 + [1] * 5)
    assert m.auc_above_sensitivity(y_sorted, perfect) == pytest.approx(1.0, abs=1e-12)
    assert m.auc_above_sensitivity(1 - y_sorted, perfect) == pytest.approx(0.0, abs=1e-12)
    # min_tpr 0 is the whole ROC AUC
    y, p = _random_case(9, 200, ties=False)
    assert m.auc_above_sensitivity(y, p, 0.0) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("min_tpr", [0.8, 0.5, 0.93])
def test_auc_sens_80_matches_the_isic2019_recipe(seed: int, ties: bool, min_tpr: float) -> None:
    y, p = _random_case(seed, 300, ties=ties)
    assert m.auc_above_sensitivity(y, p, min_tpr) == pytest.approx(isic2019_auc_sens(y, p, min_tpr), abs=1e-12)
    report = m.binary_metrics(y, p, 0.5)
    assert report["auc_sens_80"] == pytest.approx(isic2019_auc_sens(y, p, 0.8), abs=1e-12)


def test_auc_sens_80_chance_level() -> None:
    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 2, 4000), rng.random(4000)
    assert m.auc_above_sensitivity(y, p) == pytest.approx((1 - 0.8**2) / 2, abs=0.02)  # 0.18


def test_pauc_limits() -> None:
    y, p = _random_case(9, 200, ties=False)
    full = skm.roc_auc_score(y, p)
    assert m.partial_roc_auc_above_sensitivity(y, p, 0.0) == pytest.approx(full, abs=1e-12)
    assert m.partial_roc_auc_above_sensitivity(y, p, 1.0) == 0.0
    with pytest.raises(ValueError):
        m.partial_roc_auc_above_sensitivity(y, p, 1.5)


# --------------------------------------------------------------------------- undefined cases


def test_undefined_cases_are_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        only_neg = [0, 0, 0]
        assert math.isnan(m.sensitivity(only_neg, [0, 1, 0]))
        assert math.isnan(m.balanced_accuracy(only_neg, [0, 1, 0]))
        assert math.isnan(m.f1(only_neg, [0, 0, 0]))  # no positives, none predicted
        assert m.f1([1, 0], [0, 0]) == 0.0  # a missed positive is a real 0, not undefined
        assert math.isnan(m.specificity([1, 1], [1, 0]))
        assert math.isnan(m.ppv([1, 0], [0, 0]))  # nothing predicted positive
        assert math.isnan(m.npv([1, 0], [1, 1]))  # nothing predicted negative
        assert math.isnan(m.roc_auc(only_neg, [0.1, 0.5, 0.9]))
        assert math.isnan(m.roc_auc([1, 1], [0.1, 0.9]))
        assert math.isnan(m.average_precision(only_neg, [0.1, 0.5, 0.9]))
        assert m.average_precision([1, 1], [0.1, 0.9]) == 1.0
        assert math.isnan(m.partial_roc_auc_above_sensitivity([1, 1], [0.1, 0.9]))
        report = m.binary_metrics(only_neg, [0.1, 0.5, 0.9], 0.5)
        for name in ("sensitivity", "balanced_accuracy", "roc_auc", "average_precision", "pauc_80"):
            assert math.isnan(report[name]), name
        assert report["specificity"] == pytest.approx(1 / 3)  # only .1 is below 0.5
        empty = m.binary_metrics([], [], 0.5)
        assert all(math.isnan(empty[name]) for name in m.METRIC_NAMES)
        assert empty["n"] == 0
        ci = m.bootstrap_ci(only_neg, [0.1, 0.5, 0.9], 0.5, n_resamples=20)
        assert all(math.isnan(v) for v in ci["roc_auc"])
        assert not any(math.isnan(v) for v in ci["specificity"])


def test_malformed_input_raises() -> None:
    with pytest.raises(ValueError, match="only 0 and 1"):
        m.roc_auc([0, 2, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="entries"):
        m.binary_metrics([0, 1, 1], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match="finite"):
        m.roc_auc([0, 1], [0.1, float("nan")])
    with pytest.raises(ValueError, match="threshold"):
        m.binary_metrics([0, 1], [0.1, 0.2], float("nan"))


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    y, p = _random_case(1, 120, ties=False)
    first = m.bootstrap_ci(y, p, 0.5, n_resamples=200, seed=7)
    assert first == m.bootstrap_ci(y, p, 0.5, n_resamples=200, seed=7)
    assert first != m.bootstrap_ci(y, p, 0.5, n_resamples=200, seed=8)
    assert set(first) == set(m.METRIC_NAMES)


def test_bootstrap_interval_contains_point_estimate() -> None:
    y, p = _random_case(2, 300, ties=False)
    point = m.binary_metrics(y, p, 0.5)
    assert point["roc_auc"] > 0.8  # a decent classifier
    ci = m.bootstrap_ci(y, p, 0.5, n_resamples=500, seed=0)
    for name in m.METRIC_NAMES:
        lo, hi = ci[name]
        assert lo <= point[name] <= hi, (name, lo, point[name], hi)
        assert lo < hi, name


def test_stratified_resamples_keep_class_counts() -> None:
    y, _ = _random_case(4, 90, ties=False)
    n_pos = int(y.sum())
    idx = m.stratified_bootstrap_indices(y, 150, seed=3)
    assert idx.shape == (150, y.size)
    assert (y[idx].sum(axis=1) == n_pos).all()
    assert len({row.tobytes() for row in idx}) == 150  # genuinely different resamples
    assert not (np.sort(idx, axis=1) == np.arange(y.size)).all(axis=1).all()  # with replacement


def test_bootstrap_equals_slow_loop_over_the_same_resamples() -> None:
    """The vectorised bootstrap must agree with binary_metrics applied resample by resample."""
    y, p = _random_case(5, 70, ties=True)
    n_resamples, confidence, seed, thr = 150, 0.9, 11, 0.45
    idx = m.stratified_bootstrap_indices(y, n_resamples, seed=seed)
    per_resample = [m.binary_metrics(y[row], p[row], thr) for row in idx]
    fast = m.bootstrap_ci(y, p, thr, n_resamples=n_resamples, confidence=confidence, seed=seed)
    for name in m.METRIC_NAMES:
        values = np.array([r[name] for r in per_resample], dtype=float)
        expected = np.nanpercentile(values, [5.0, 95.0])
        assert fast[name] == pytest.approx(tuple(expected), abs=1e-12), name


def test_bootstrap_narrower_with_more_data() -> None:
    small_y, small_p = _random_case(6, 100, ties=False)
    big_y, big_p = _random_case(6, 2000, ties=False)
    small = m.bootstrap_ci(small_y, small_p, 0.5, n_resamples=300, seed=0)
    big = m.bootstrap_ci(big_y, big_p, 0.5, n_resamples=300, seed=0)
    for name in ("roc_auc", "sensitivity", "specificity", "accuracy", "pauc_80"):
        assert big[name][1] - big[name][0] < small[name][1] - small[name][0], name


def test_bootstrap_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        m.bootstrap_ci([0, 1], [0.2, 0.8], 0.5, confidence=1.0)
    with pytest.raises(ValueError):
        m.bootstrap_ci([0, 1], [0.2, 0.8], 0.5, n_resamples=0)


# --------------------------------------------------------------------------- report


def test_classification_report_text() -> None:
    # benign: 2 true, predicted 0 1 -> recall 1/2; malignant: predicted 1 for both + 1 FP ->
    # precision 2/3, recall 1
    text = m.classification_report_text([0, 0, 1, 1], [0, 1, 1, 1], ["benign", "malignant"])
    lines = {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}
    assert lines["benign"][1:4] == ["1.0000", "0.5000", f"{2 * 1.0 * 0.5 / 1.5:.4f}"]
    assert lines["malignant"][1:3] == [f"{2 / 3:.4f}", "1.0000"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.classification_report_text([0, 1], [0, 0], ["benign", "malignant"])  # undefined PPV
