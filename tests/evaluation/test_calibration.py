"""Tests for skinonnx.evaluation.calibration: temperature recovery, ECE, Brier, reliability bins."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.special import log_softmax
from scipy.special import softmax as scipy_softmax
from sklearn.metrics import brier_score_loss

from skinonnx.evaluation.calibration import (
    brier_score,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from skinonnx.softmax import softmax


def _calibrated_logits(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model that is calibrated by construction: labels drawn from its softmax."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, 2))
    prob_pos = scipy_softmax(logits, axis=1)[:, 1]
    labels = (rng.random(n) < prob_pos).astype(int)
    return logits, labels


def _nll(logits: np.ndarray, labels: np.ndarray, t: float) -> float:
    return float(-np.mean(log_softmax(logits / t, axis=1)[np.arange(len(labels)), labels]))


# --------------------------------------------------------------------------- softmax


def test_softmax_matches_scipy_and_is_stable() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(20, 2))
    assert softmax(z) == pytest.approx(scipy_softmax(z, axis=1), abs=1e-15)
    assert softmax(z, 2.0) == pytest.approx(scipy_softmax(z / 2.0, axis=1), abs=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = softmax(np.array([[1000.0, -1000.0], [5000.0, 5001.0]]))
    assert np.isfinite(big).all()
    assert big.sum(axis=1) == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError):
        softmax(z, 0.0)


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("seed", range(3))
def test_fit_temperature_recovers_known_temperature(seed: int) -> None:
    logits, labels = _calibrated_logits(seed, 5000)
    true_t = 2.5
    fitted = fit_temperature(logits * true_t, labels)  # overconfident by exactly 2.5
    assert fitted == pytest.approx(true_t, abs=0.3)
    # it is a minimum of the NLL (checked with an independent NLL)
    scaled = logits * true_t
    for factor in (1.05, 1 / 1.05):
        assert _nll(scaled, labels, fitted) < _nll(scaled, labels, fitted * factor)


def test_fit_temperature_near_one_for_calibrated_and_below_one_for_underconfident() -> None:
    logits, labels = _calibrated_logits(7, 5000)
    assert fit_temperature(logits, labels) == pytest.approx(1.0, abs=0.12)
    assert fit_temperature(logits / 2.0, labels) == pytest.approx(0.5, abs=0.06)


def test_temperature_scaling_keeps_predictions_and_fixes_ece() -> None:
    logits, labels = _calibrated_logits(3, 5000)
    overconfident = logits * 3.0
    t = fit_temperature(overconfident, labels)
    before = softmax(overconfident)
    after = softmax(overconfident, t)
    assert (before.argmax(axis=1) == after.argmax(axis=1)).all()
    ece_before = expected_calibration_error(labels, before[:, 1])
    ece_after = expected_calibration_error(labels, after[:, 1])
    assert ece_after < ece_before / 3


def test_fit_temperature_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(ValueError):
        fit_temperature(np.zeros(3), np.array([0, 1, 1]))


# --------------------------------------------------------------------------- ECE & reliability


def test_ece_and_reliability_hand_case() -> None:
    # p     .95  .75  .35  .45 ; y 1 0 1 0
    # pred   1    1    0    0  ; confidence .95 .75 .65 .55 ; correct  yes no no yes
    # 5 bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]:
    #   (.4,.6]: {.55}      conf .55, acc 1 -> |gap| .45, weight 1/4
    #   (.6,.8]: {.75, .65} conf .70, acc 0 -> |gap| .70, weight 2/4
    #   (.8,1] : {.95}      conf .95, acc 1 -> |gap| .05, weight 1/4
    # ECE = (.45 + 2 * .70 + .05) / 4 = 1.9 / 4 = .475
    y = [1, 0, 1, 0]
    p = [0.95, 0.75, 0.35, 0.45]
    curve = reliability_curve(y, p, n_bins=5)
    assert curve["bin_edges"] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert curve["count"] == [0, 0, 1, 2, 1]
    assert curve["confidence"][2:] == pytest.approx([0.55, 0.70, 0.95])
    assert curve["accuracy"][2:] == pytest.approx([1.0, 0.0, 1.0])
    assert math.isnan(curve["confidence"][0]) and math.isnan(curve["accuracy"][1])
    assert expected_calibration_error(y, p, n_bins=5) == pytest.approx(0.475, abs=1e-12)


def test_bins_are_right_closed() -> None:
    # 4 bins (0,.25] (.25,.5] (.5,.75] (.75,1]; confidences .5 .75 1.0 1.0 sit exactly on edges
    # p .5 -> pred 1, conf .5 ; p .25 -> pred 0, conf .75 ; p 1.0 and 0.0 -> conf 1.0
    curve = reliability_curve([1, 0, 1, 0], [0.5, 0.25, 1.0, 0.0], n_bins=4)
    assert curve["count"] == [0, 1, 1, 2]


def _loop_ece(y: np.ndarray, p: np.ndarray, n_bins: int) -> float:
    """Direct transcription of the definition, bin by bin with explicit (lo, hi] bounds."""
    pred = (p >= 0.5).astype(int)
    conf = np.maximum(p, 1 - p)
    total = 0.0
    for k in range(n_bins):
        lo, hi = k / n_bins, (k + 1) / n_bins
        in_bin = (conf > lo) & (conf <= hi) if k else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.sum() * abs((pred[in_bin] == y[in_bin]).mean() - conf[in_bin].mean())
    return total / len(y)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_ece_matches_definition_on_random_data(seed: int, n_bins: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.random(500) * 0.999 + 0.0005  # keep clear of the exact bin edges
    y = (rng.random(500) < p**2).astype(int)
    expected = _loop_ece(y, p, n_bins)
    assert expected_calibration_error(y, p, n_bins) == pytest.approx(expected, abs=1e-12)
    assert sum(reliability_curve(y, p, n_bins)["count"]) == 500


def test_ece_small_for_calibrated_and_larger_for_overconfident() -> None:
    rng = np.random.default_rng(42)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)  # calibrated by construction
    logit = np.log(p / (1 - p))
    overconfident = 1 / (1 + np.exp(-3 * logit))
    calibrated_ece = expected_calibration_error(y, p)
    overconfident_ece = expected_calibration_error(y, overconfident)
    assert calibrated_ece < 0.02
    assert overconfident_ece > 0.08
    assert overconfident_ece > 4 * calibrated_ece


# --------------------------------------------------------------------------- Brier


def test_brier_hand_case_and_sklearn() -> None:
    # (.9-1)^2 + (.8-0)^2 + (.3-1)^2 + (.4-0)^2 = .01 + .64 + .49 + .16 = 1.30 ; / 4 = .325
    assert brier_score([1, 0, 1, 0], [0.9, 0.8, 0.3, 0.4]) == pytest.approx(0.325, abs=1e-12)
    rng = np.random.default_rng(5)
    p = rng.random(300)
    y = rng.integers(0, 2, 300)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    assert math.isnan(brier_score([], []))
    with pytest.raises(ValueError):
        brier_score([0, 1], [0.5, 1.5])
