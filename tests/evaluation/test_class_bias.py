"""The per-class offsets tuner: it must help where argmax under-calls rare classes, and never hurt."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from skinonnx.evaluation.class_bias import balanced_accuracy, biased_decision, log_probabilities, tune_class_bias

PRIOR = np.array([0.75, 0.17, 0.08])


def _skewed(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated posteriors of an imbalanced problem: argmax favours the common class, so the rare ones are under-
    called and balanced accuracy is left on the table (the optimum offsets are about -log prior)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=PRIOR)
    logits = np.eye(3)[y] * 1.2 + rng.normal(size=(n, 3)) + np.log(PRIOR)
    return logits, y


def test_offsets_raise_balanced_accuracy_on_the_tuning_data_and_on_new_data() -> None:
    logits, y = _skewed(3000, 0)
    lp = log_probabilities(logits)
    tuned = tune_class_bias(lp, y)
    argmax = balanced_accuracy_score(y, lp.argmax(1))
    assert tuned.balanced_accuracy_before == pytest.approx(argmax)
    decided = biased_decision(lp, tuned.offsets)
    assert tuned.balanced_accuracy_after == pytest.approx(balanced_accuracy_score(y, decided))
    assert tuned.balanced_accuracy_after > argmax + 0.05
    assert abs(sum(tuned.offsets)) < 1e-9  # centred
    # the common class is pushed down, the rarest up: the prior's correction
    assert tuned.offsets[0] < tuned.offsets[1] < tuned.offsets[2]
    new_logits, new_y = _skewed(3000, 1)  # not a fit to noise: it helps on images it never saw
    new_lp = log_probabilities(new_logits)
    assert balanced_accuracy_score(new_y, biased_decision(new_lp, tuned.offsets)) > \
        balanced_accuracy_score(new_y, new_lp.argmax(1)) + 0.05


def test_the_search_finds_the_best_grid_point_on_a_small_case() -> None:
    """Brute force over a fine grid of offset pairs (class 0 fixed at 0) finds nothing better than the tuner."""
    logits, y = _skewed(60, 2)
    lp = log_probabilities(logits)
    tuned = tune_class_bias(lp, y)
    grid = np.linspace(-3, 3, 61)
    assert balanced_accuracy(y, lp.argmax(1), 3) == pytest.approx(balanced_accuracy_score(y, lp.argmax(1)))
    brute = max(balanced_accuracy(y, biased_decision(lp, [0.0, a, b]), 3) for a, b in itertools.product(grid, grid))
    assert tuned.balanced_accuracy_after >= brute - 1e-12


def test_nothing_to_gain_leaves_argmax() -> None:
    y = np.array([0, 1, 2, 0, 1, 2])
    lp = log_probabilities(np.eye(3)[y] * 5.0)  # argmax is already perfect
    tuned = tune_class_bias(lp, y)
    assert tuned.offsets == [0.0, 0.0, 0.0] and tuned.balanced_accuracy_after == 1.0


def test_temperature_scales_the_log_probabilities() -> None:
    logits = np.array([[2.0, 0.0, -1.0]])
    np.testing.assert_allclose(np.exp(log_probabilities(logits, 2.0)).sum(), 1.0)
    np.testing.assert_allclose(log_probabilities(logits, 2.0), log_probabilities(logits / 2.0))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        tune_class_bias(np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="class indices"):
        tune_class_bias(np.zeros((2, 3)), [0, 3])
    assert tune_class_bias(np.zeros((3, 3)), [1, 1, 1]).offsets == [0.0, 0.0, 0.0]  # one class: nothing to balance
