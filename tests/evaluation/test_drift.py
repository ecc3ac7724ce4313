"""Drift tests: Holm's correction by hand, no alarm on the same distribution, alarm on a shift."""

from __future__ import annotations

import numpy as np
import pytest

from skinonnx.monitoring import drift


def test_holm_by_hand() -> None:
    # sorted: .005 x4 = .02, .01 x3 = .03, .03 x2 = .06, .04 x1 = .04 -> running max .02 .03 .06 .06
    assert drift.holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert drift.holm([0.9, 0.8]).tolist() == pytest.approx([1.0, 1.0])


def _sample(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    return {"probability": rng.beta(2, 5, n), "mean_red": rng.normal(150 + shift, 10, n),
            "sharpness": rng.gamma(4, 2, n)}


@pytest.mark.parametrize("method", ["ks", "mmd"])
def test_same_distribution_rarely_alarms_and_a_shift_does(method: str) -> None:
    rng = np.random.default_rng(0)
    reference = _sample(rng, 120)
    kwargs = {"permutations": 200} if method == "mmd" else {}
    test = drift.ks_test if method == "ks" else drift.mmd_test
    alarms = sum(test(reference, _sample(rng, 40), **kwargs)["drift"] for _ in range(30))
    assert alarms <= 5  # alpha 0.05: expected 1.5 of 30; 5 or more has probability < 2 %
    shifted = test(reference, _sample(rng, 40, shift=12.0), **kwargs)
    assert shifted["drift"] and shifted["p_value"] < 0.01
    if method == "ks":
        moved = [k for k, q in shifted["quantities"].items() if q["drift"]]
        assert moved == ["mean_red"]
        assert shifted["p_value"] == shifted["quantities"]["mean_red"]["p_adjusted"]


def test_mmd_sees_a_change_of_correlation_that_ks_cannot() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=150)
    reference = {"a": x, "b": rng.normal(size=150)}
    y = rng.normal(size=60)
    new = {"a": y, "b": y + rng.normal(scale=0.1, size=60)}  # same marginals (nearly), now correlated
    assert not drift.ks_test(reference, new)["drift"]
    assert drift.mmd_test(reference, new, permutations=300)["drift"]


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="share no quantity"):
        drift.drift_test({"a": [1, 2, 3]}, {"b": [1, 2, 3]})
    with pytest.raises(ValueError, match="method"):
        drift.drift_test({"a": [1, 2, 3]}, {"a": [1, 2, 3]}, method="chi2")
    with pytest.raises(ValueError, match="at least 2"):
        drift.ks_test({"a": [1.0]}, {"a": [1.0, 2.0]})


def test_mmd_statistic_matches_the_formula() -> None:
    rng = np.random.default_rng(2)
    k = rng.random((5, 5))
    k = (k + k.T) / 2
    first = np.array([True, True, False, False, False])
    a, b = [0, 1], [2, 3, 4]
    by_hand = (k[0, 1] + k[1, 0]) / 2 + (k[np.ix_(b, b)].sum() - np.trace(k[np.ix_(b, b)])) / 6 \
        - 2 * k[np.ix_(a, b)].mean()
    assert drift.mmd_statistics(k, first)[0] == pytest.approx(by_hand)
