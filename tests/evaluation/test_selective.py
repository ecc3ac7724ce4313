"""Selective classification: risk-coverage curves and AURC against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skinonnx.evaluation import selective as s


def test_hand_case_aurc_random_and_oracle() -> None:
    # accepted in order: correct, correct, error, correct
    rc = s.risk_coverage([1, 1, 0, 1], [0.9, 0.8, 0.7, 0.1])
    assert rc.coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert rc.risk.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 4])
    assert rc.aurc == pytest.approx((0 + 0 + 1 / 3 + 1 / 4) / 4)  # 7/48
    assert rc.random_aurc == pytest.approx(1 / 4)
    assert rc.oracle_aurc == pytest.approx(1 / 16)  # the error last: risks 0, 0, 0, 1/4
    assert rc.e_aurc == pytest.approx(7 / 48 - 3 / 48)


def test_ties_share_their_errors() -> None:
    # the first two are tied (one correct, one error): the first accepted is an error with probability 1/2
    rc = s.risk_coverage([1, 0, 1], [0.5, 0.5, 0.1])
    assert rc.risk.tolist() == pytest.approx([0.5, 0.5, 1 / 3])
    # a ranking that ties every image is exactly random abstention
    flat = s.risk_coverage([1, 0, 0, 1, 1], np.zeros(5))
    assert flat.aurc == pytest.approx(flat.random_aurc) == pytest.approx(2 / 5)


def test_good_ranking_beats_random_and_reversed_is_worse() -> None:
    rng = np.random.default_rng(0)
    correct = rng.random(400) < 0.8
    informative = correct + rng.normal(0, 0.5, 400)
    good = s.risk_coverage(correct, informative)
    bad = s.risk_coverage(correct, -informative)
    assert good.oracle_aurc < good.aurc < good.random_aurc < bad.aurc


def test_correct_and_distance() -> None:
    assert s.correct_predictions([1, 0, 1, 0], [0.6, 0.6, 0.2, 0.1], 0.5).tolist() == [True, False, False, True]
    assert s.threshold_distance([0.6, 0.2], 0.3).tolist() == pytest.approx([0.3, 0.1])


def test_accept_top_and_metrics_on_accepted() -> None:
    y = [1, 1, 0, 0, 1, 0]
    p = [0.9, 0.4, 0.45, 0.1, 0.8, 0.7]
    conf = s.threshold_distance(p, 0.5)  # .4 .1 .05 .4 .3 .2
    mask = s.accept_top(conf, 0.5)  # three most confident: .9 (idx 0), .1 (idx 3), .8 (idx 4)
    assert mask.tolist() == [True, False, False, True, True, False]
    m = s.metrics_on_accepted(y, p, 0.5, mask)
    assert m["coverage"] == 0.5 and m["n_accepted"] == 3
    assert m["sensitivity"] == 1.0 and m["specificity"] == 1.0 and m["error_rate"] == 0.0
    full = s.metrics_on_accepted(y, p, 0.5, np.ones(6, bool))
    # all: TP .9 .8, FN .4, TN .45 .1, FP .7
    assert full["sensitivity"] == pytest.approx(2 / 3) and full["specificity"] == pytest.approx(2 / 3)
    none = s.metrics_on_accepted(y, p, 0.5, np.zeros(6, bool))
    assert math.isnan(none["sensitivity"]) and none["n_accepted"] == 0


def test_section_with_and_without_ood() -> None:
    y = [1, 1, 0, 0, 1, 0]
    p = [0.9, 0.4, 0.45, 0.1, 0.8, 0.7]
    plain = s.selective_section(y, p, 0.5)
    assert set(plain["curves"]) == {"threshold_distance"}
    assert plain["deployed"]["coverage"] == 1.0 and plain["deployed"]["ood_threshold"] is None
    ood = [0.1, 5.0, 0.2, 0.3, 0.1, 9.0]  # refuses the two errors .4 and .7 at threshold 1
    with_ood = s.selective_section(y, p, 0.5, ood_score=ood, ood_threshold=1.0)
    assert with_ood["deployed"]["n_accepted"] == 4 and with_ood["deployed"]["error_rate"] == 0.0
    curve = with_ood["curves"]["ood_score"]
    assert curve["aurc"] == pytest.approx(curve["oracle_aurc"])  # the two errors have the highest scores
    assert curve["random_aurc"] == pytest.approx(2 / 6)


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        s.risk_coverage([1, 0], [0.1])
    with pytest.raises(ValueError):
        s.risk_coverage([1, 0], [0.1, float("nan")])
    with pytest.raises(ValueError):
        s.accept_top([0.1, 0.2], 1.5)


def test_bootstrap_says_whether_a_ranking_beats_random() -> None:
    rng = np.random.default_rng(3)
    correct = rng.random(300) < 0.7
    good = s.aurc_bootstrap(correct, correct + rng.normal(0, 0.5, 300), n_resamples=200)
    assert good["gain_over_random_ci"][0] > 0 and good["aurc_ci"][0] < good["aurc_ci"][1]
    noise = s.aurc_bootstrap(correct, rng.random(300), n_resamples=200)
    assert noise["gain_over_random_ci"][0] < 0 < noise["gain_over_random_ci"][1]
    section = s.selective_section([1, 0, 1, 0, 1, 0], [0.9, 0.1, 0.4, 0.6, 0.8, 0.3], 0.5, bootstrap=50)
    assert len(section["curves"]["threshold_distance"]["aurc_ci"]) == 2
    assert s.selective_section([1, 0], [0.9, 0.1], 0.5)["curves"]["threshold_distance"]["aurc_ci"] is None
