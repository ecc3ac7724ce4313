"""The verdict every report shows first (evaluation/verdict.py): AUC interval vs chance, out-of-fold vs test, and the
labelled partial AUCs, in the terminal table, report.html and MODEL_CARD.md alike."""

from __future__ import annotations

import copy
import html
import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.report_html import synthetic_summary
from skinonnx.evaluation.metrics import PARTIAL_AUC_LABELS
from skinonnx.evaluation.verdict import AucEstimate, verdict_of, which_to_believe
from skinonnx.reporting.html_report import render_html
from skinonnx.reporting.model_card import render_model_card
from skinonnx.reporting.model_run import EvalResult
from skinonnx.reporting.terminal import format_metrics
from tests.scratch import scratch_dir

from ..conftest import TrainedModel, run_cli

CHANCE = "No better than chance"


def test_two_estimates_are_judged_on_their_difference_not_on_interval_overlap() -> None:
    # The issue's numbers: the intervals overlap (0.563-0.590), yet the difference 0.132 exceeds its margin.
    oof = AucEstimate("out-of-fold", 0.537, (0.486, 0.590), 452, independent_of_selection=False)
    test = AucEstimate("test", 0.669, (0.563, 0.764), 112)
    said = which_to_believe(oof, test)
    assert "disagree" in said and "Expect the lower, out-of-fold figure" in said and "margin ±0.113" in said
    assert oof.includes_chance and not test.includes_chance
    agree = which_to_believe(AucEstimate("out-of-fold", 0.80, (0.76, 0.84), 452),
                             AucEstimate("test", 0.78, (0.70, 0.86), 112))
    assert "agree within" in agree and "Believe the out-of-fold figure" in agree
    lower = which_to_believe(AucEstimate("out-of-fold", 0.85, (0.81, 0.89), 452),
                             AucEstimate("test", 0.65, (0.55, 0.75), 112))
    assert "disagree" in lower and "Believe the lower, test figure" in lower
    assert "cannot be said" in which_to_believe(AucEstimate("out-of-fold", 0.8, None, 452),
                                                AucEstimate("test", 0.7, None, 112))


def _weak_summary(seed: int, shift: float) -> dict:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(40, int), np.zeros(60, int)]
    p = np.clip(rng.normal(0.4 + shift * y, 0.2), 0, 1)
    s = synthetic_summary(y, p, 0.5, [], bootstrap=200)
    s["bootstrap"] = {"method": "stratified percentile bootstrap", "resamples": 200, "confidence": 0.95, "seed": 0}
    s.update(classes=["benign", "malignant"], reference={"threshold": 0.5, "metrics": s["metrics"], "ci": s["ci"]},
             calibration={"temperature": 1.0, "n_bins": 10, "at_training": None, "validation": None,
                          "evaluated": None})
    return s


def _terminal(s: dict) -> str:
    return format_metrics(EvalResult(s["metrics"], s["threshold"], s["threshold_source"], "CPUExecutionProvider",
                                     Path("."), [], summary=s))


def _cv(s: dict, oof_auc: float, oof_ci: list[float]) -> dict:
    out = copy.deepcopy(s)
    out["cross_validation"] = {"members": 3, "combination": "mean_logits", "tta": None, "run": "cv",
                               "fold_val_auc": [0.6, 0.5, 0.55], "fold_val_auc_mean": 0.55, "fold_val_auc_sd": 0.05,
                               "oof": {"n": 452, "roc_auc": oof_auc, "roc_auc_ci": oof_ci},
                               "threshold_transfer": {}, "ensemble_evaluated": {}}
    return out


def test_chance_and_cv_estimates_are_in_the_headline_of_terminal_and_html() -> None:
    weak, strong = _weak_summary(0, 0.0), _weak_summary(1, 0.4)
    assert verdict_of(weak).no_better_than_chance and not verdict_of(strong).no_better_than_chance
    for s, warned in ((weak, True), (strong, False)):
        page, table = render_html(s, [], has_cam=False), _terminal(s)
        headline = page.split('<section id="headline">')[1].split("</section>")[0]
        assert (CHANCE in headline) is warned and (CHANCE in "".join(table.split("\n")[:4])) is warned, table
        # the partial AUCs are labelled, not "0.034 / 0.220"
        assert all(html.escape(label) in headline for label in PARTIAL_AUC_LABELS.values())
        assert "Partial AUCs" not in headline
    cv = _cv(strong, 0.537, [0.486, 0.590])
    page, table = render_html(cv, [], has_cam=False), _terminal(cv)
    headline = page.split('<section id="headline">')[1].split("</section>")[0]
    for text in (headline, table):
        assert "ROC AUC, out-of-fold" in text or "| out-of-fold 0.537 [0.486, 0.590] on 452 images" in text
        assert "No better than chance: the out-of-fold ROC AUC interval [0.486, 0.590]" in text
        assert verdict_of(cv).advice.split(" (")[0] in text  # the sentence on which estimate to believe
    assert "ROC AUC, test" in headline and 'data-verdict="advice"' in headline


@pytest.fixture(scope="module")
def summary(trained: TrainedModel, request: pytest.FixtureRequest) -> dict:
    out = scratch_dir(request, "verdict")
    run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--output", out, "--bootstrap", "50", "--quiet",
            "--no-html", "--no-plots")
    return json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_model_card_shows_the_same_verdict_and_single_runs_keep_the_validation_wording(summary: dict) -> None:
    assert summary["verdict"] == verdict_of(summary).as_dict()
    assert summary["calibration"]["fitted_on"] == "validation" and summary["calibration"]["validation_left_out"] is None
    card = render_model_card(summary)
    assert "fitted on the validation split" in card and "out-of-fold" not in card
    for interval, warned in (([0.41, 0.62], True), ([0.55, 0.8], False)):
        changed = copy.deepcopy(summary)
        changed["ci"]["roc_auc"] = interval
        assert (CHANCE in render_model_card(changed)) is warned
    no_ci = copy.deepcopy(summary)
    no_ci["ci"], no_ci["bootstrap"], no_ci["reference"]["ci"] = None, None, None
    card = render_model_card(no_ci)  # issue 29 item 1: no interval, no claim either way
    assert "Unknown whether better than chance" in card and CHANCE not in card
    cv = _cv(summary, 0.537, [0.486, 0.590])
    card = render_model_card(cv)
    assert "| out-of-fold | 0.537 | [0.486, 0.590] | 452 | no |" in card and verdict_of(cv).advice in card


def test_which_splits_are_in_sample_and_where_calibration_was_fitted(tmp_path: Path) -> None:
    from skinonnx.reporting.cv_report import trained_on
    from skinonnx.reporting.report import _fitted_on

    cv = {"ensemble": json.dumps({"members": 3}), "training_data": str(tmp_path)}
    assert trained_on(cv, tmp_path, "val") == "pooled for cross-validation: 2 of the 3 members trained on each image"
    assert trained_on(cv, tmp_path, "test") is None and trained_on({}, tmp_path, "val") is None
    (tmp_path / "other").mkdir()
    assert trained_on(cv, tmp_path / "other", "val") is None  # another data set's val split was never pooled
    assert trained_on({}, tmp_path, "train") == "the model trained on it"
    assert _fitted_on(cv, None) == "out-of-fold"  # an older ensemble export without calibration.fitted_on
    assert _fitted_on({}, {"temperature": 2.0}) == "validation" and _fitted_on({}, None) == "validation"
    assert _fitted_on({}, {"fitted_on": "out-of-fold"}) == "out-of-fold"


def test_without_intervals_the_chance_verdict_is_unknown_everywhere() -> None:
    # issue 29 item 1: `test --no-ci` wrote "no_better_than_chance": false, read by scripts as "better than chance"
    s = _weak_summary(0, 0.0)
    s["ci"], s["bootstrap"], s["reference"]["ci"] = None, None, None
    said = verdict_of(s).as_dict()
    assert said["no_better_than_chance"] is None and said["estimates"][0]["includes_chance"] is None
    assert json.loads(json.dumps(said))["no_better_than_chance"] is None  # summary.json: null, not false
    unknown = "Unknown whether better than chance"
    headline = render_html(s, [], has_cam=False).split('<section id="headline">')[1].split("</section>")[0]
    for text in (_terminal(s), headline):
        assert unknown in text and CHANCE not in text
    # an interval settles it either way; one estimate without an interval keeps the whole answer unknown
    assert verdict_of(_weak_summary(1, 0.4)).no_better_than_chance is False
    cv = _cv(s, 0.9, [0.85, 0.95])
    assert verdict_of(cv).no_better_than_chance is None
    assert verdict_of(_cv(s, 0.52, [0.45, 0.6])).no_better_than_chance is True
