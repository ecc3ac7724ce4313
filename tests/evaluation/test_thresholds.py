"""Tests for skinonnx.evaluation.thresholds: hand-built operating points, parsing, degenerate data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from skinonnx.evaluation.thresholds import (
    FALLBACK_THRESHOLD,
    ThresholdChoice,
    ThresholdPolicy,
    choose_threshold,
    parse_policy,
)

# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "kind", "value"),
    [
        ("youden", "youden", None),
        ("  YOUDEN ", "youden", None),
        ("sensitivity:0.95", "sensitivity", 0.95),
        ("sensitivity: 1", "sensitivity", 1.0),
        ("Sensitivity:1e-3", "sensitivity", 0.001),
        ("fixed:0.5", "fixed", 0.5),
        ("fixed:0", "fixed", 0.0),
        ("fixed:1", "fixed", 1.0),
    ],
)
def test_parse_valid(text: str, kind: str, value: float | None) -> None:
    policy = parse_policy(text)
    assert policy.kind == kind
    assert policy.value == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "f1",
        "youden:0.3",
        "sensitivity",
        "sensitivity:",
        "sensitivity:0",
        "sensitivity:-0.2",
        "sensitivity:1.01",
        "sensitivity:abc",
        "sensitivity:nan",
        "sensitivity:inf",
        "fixed:-0.1",
        "fixed:1.5",
        "fixed:nan",
        "fixed:0.5:0.6",
    ],
)
def test_parse_errors_list_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_policy(text)
    message = str(info.value)
    assert repr(text) in message
    for form in ("'youden'", "'sensitivity:S'", "'fixed:T'"):
        assert form in message


def test_policy_constructor_validates_too() -> None:
    with pytest.raises(ValueError):
        ThresholdPolicy("sensitivity", 0.0)
    with pytest.raises(ValueError):
        ThresholdPolicy("fixed", None)
    with pytest.raises(ValueError):
        ThresholdPolicy("youden", 0.5)
    with pytest.raises(ValueError):
        ThresholdPolicy("best", 0.5)  # type: ignore[arg-type]


def test_str_round_trips() -> None:
    rng = np.random.default_rng(0)
    policies = [ThresholdPolicy("youden"), ThresholdPolicy("fixed", 0.0)]
    policies.append(ThresholdPolicy("fixed", 1))
    policies += [ThresholdPolicy("sensitivity", float(v)) for v in rng.uniform(1e-9, 1.0, 50)]
    policies += [ThresholdPolicy("fixed", float(v)) for v in rng.uniform(0.0, 1.0, 50)]
    for policy in policies:
        assert parse_policy(str(policy)) == policy
    assert str(parse_policy(" Sensitivity : 0.95 ")) == "sensitivity:0.95"
    assert str(parse_policy("fixed:.5")) == "fixed:0.5"


def _sens(y: np.ndarray, p: np.ndarray, t: float) -> float:
    return int(np.count_nonzero(p[y == 1] >= t)) / int(np.count_nonzero(y == 1))


def _spec(y: np.ndarray, p: np.ndarray, t: float) -> float:
    return int(np.count_nonzero(p[y == 0] < t)) / int(np.count_nonzero(y == 0))


# --------------------------------------------------------------------------- youden


def test_youden_hand_case_with_float_trap_tie() -> None:
    # descending:  .95P .9N .85P .8P .7N .6P .5N .4N .3N .2P   (5 positives, 5 negatives)
    # at t:   .95     .9     .85    .8     .7     .6     .5   .4    .3    .2
    # TP      1       1      2      3      3      4      4    4     4     5
    # FP      0       1      1      1      2      2      3    4     5     5
    # J=TPR-FPR .2    0      .2     .4     .2     .4     .2   0    -.2    0
    # Max J = .4 at t = .8 (3/5 - 1/5) and t = .6 (4/5 - 2/5): a tie -> the higher, .8.
    # (In floating point 0.6 - 0.2 < 0.8 - 0.4, so naive float arithmetic would pick .6.)
    pos = [0.95, 0.85, 0.8, 0.6, 0.2]
    neg = [0.9, 0.7, 0.5, 0.4, 0.3]
    y = [1] * 5 + [0] * 5
    choice = choose_threshold("youden", y, pos + neg)
    assert choice.roc_point == 0.8
    assert choice.value == pytest.approx(0.75)  # halfway to the next score down (.7): same counts, no image on it
    assert choice.note is None and not choice.fell_back
    assert choice.sensitivity == pytest.approx(3 / 5)
    assert choice.specificity == pytest.approx(4 / 5)


def test_youden_unique_maximum() -> None:
    # descending .9P .8P .7N .6P .5N .4N: J at .9 = 1/3, .8 = 2/3, .7 = 2/3 - 1/3, .6 = 1 - 1/3,
    # .5 = 1 - 2/3, .4 = 0 -> unique maximum 2/3 at .8 and .6: tie again -> .8;
    # move .6 up to .75 so J(.75) = 1 > everything -> .75
    y = [1, 1, 0, 1, 0, 0]
    assert choose_threshold("youden", y, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]).roc_point == 0.8
    assert choose_threshold("youden", y, [0.9, 0.8, 0.7, 0.75, 0.5, 0.4]).roc_point == 0.75
    assert choose_threshold("youden", y, [0.9, 0.8, 0.7, 0.75, 0.5, 0.4]).value == pytest.approx(0.725)


@pytest.mark.parametrize("seed", range(5))
def test_youden_reaches_best_roc_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.3).astype(int)
    p = np.round(np.clip(rng.normal(0.4 + 0.25 * y, 0.2), 0, 1), 2)
    fpr, tpr, _ = skm.roc_curve(y, p)
    choice = choose_threshold(ThresholdPolicy("youden"), y, p)
    assert choice.roc_point in set(p.tolist())
    below = p[p < choice.roc_point].max()
    assert choice.value == pytest.approx((choice.roc_point + below) / 2)
    assert np.array_equal(p >= choice.value, p >= choice.roc_point)  # the same ROC point...
    assert not np.any(p == choice.value)  # ...with no image on the threshold
    pred = p >= choice.value
    j = skm.recall_score(y, pred) + skm.recall_score(y, pred, pos_label=0) - 1
    assert j == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    # no higher observed threshold does as well
    for t in np.unique(p[p > choice.roc_point]):
        assert _sens(y, p, t) + _spec(y, p, t) - 1 < j - 1e-12


# --------------------------------------------------------------------------- sensitivity


POS = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.35, 0.3, 0.2, 0.1]  # 10 positives
NEG = [0.65, 0.45, 0.25, 0.15, 0.05]


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # need TP >= target * 10: .8 -> 8 positives -> the 8th highest positive, .3
        (0.8, 0.3),
        # .9 -> 9 -> .2 ;  .95 -> 9.5, so 10 -> .1 ;  1.0 -> 10 -> .1
        (0.9, 0.2),
        (0.95, 0.1),
        (1.0, 0.1),
        # .81 -> 8.1, so 9 -> .2 ; .05 -> 0.5, so 1 -> .9 (the top positive alone)
        (0.81, 0.2),
        (0.05, 0.9),
    ],
)
def test_sensitivity_hand_cases(target: float, expected: float) -> None:
    y = [1] * len(POS) + [0] * len(NEG)
    choice = choose_threshold(f"sensitivity:{target}", y, POS + NEG)
    assert choice.roc_point == expected
    lower = [q for q in POS + NEG if q < expected]
    assert choice.value == (pytest.approx((expected + max(lower)) / 2) if lower else expected)
    assert choice.sensitivity >= target
    assert choice.policy == ThresholdPolicy("sensitivity", target)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("target", [0.5, 0.8, 0.9, 0.95, 1.0])
def test_sensitivity_is_highest_threshold_reaching_target(seed: int, target: float) -> None:
    rng = np.random.default_rng(seed)
    y = (rng.random(200) < 0.25).astype(int)
    y[:2] = [0, 1]
    p = np.round(rng.random(200) * 0.6 + 0.3 * y, 3)
    choice = choose_threshold(ThresholdPolicy("sensitivity", target), y, p)
    assert skm.recall_score(y, p >= choice.value) >= target
    assert np.array_equal(p >= choice.value, p >= choice.roc_point)
    higher = np.unique(p[p > choice.roc_point])
    if higher.size:  # the next observed threshold up misses the target
        assert skm.recall_score(y, p >= higher.min()) < target
    # the best specificity among all observed thresholds that reach the target
    reaching = [t for t in np.unique(p) if _sens(y, p, t) >= target]
    best_spec = max(_spec(y, p, t) for t in reaching)
    assert choice.specificity == pytest.approx(best_spec)


# --------------------------------------------------------------------------- fixed & fallback


def test_fixed_ignores_data() -> None:
    choice = choose_threshold("fixed:0.3", [1, 0, 1], [0.2, 0.4, 0.9])
    assert choice.value == 0.3 and choice.roc_point is None and not choice.fell_back
    assert float(choice) == 0.3
    assert choice.sensitivity == pytest.approx(1 / 2) and choice.specificity == 0.0
    one_class = choose_threshold("fixed:0.7", [0, 0], [0.2, 0.9])
    assert one_class.value == 0.7 and one_class.note is None
    assert math.isnan(one_class.sensitivity)


@pytest.mark.parametrize("policy", ["youden", "sensitivity:0.9"])
@pytest.mark.parametrize(("y", "p"), [([0, 0, 0], [0.1, 0.7, 0.9]), ([1, 1], [0.2, 0.3]), ([], [])])
def test_single_class_falls_back_with_note(policy: str, y: list[int], p: list[float]) -> None:
    choice = choose_threshold(policy, y, p)
    assert isinstance(choice, ThresholdChoice)
    assert choice.value == FALLBACK_THRESHOLD
    assert choice.fell_back
    assert choice.note is not None and "both classes" in choice.note and policy in choice.note


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        choose_threshold("youden", [0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        choose_threshold("youden", [0, 1], [0.1])
    with pytest.raises(ValueError):
        choose_threshold("bogus", [0, 1], [0.1, 0.2])
