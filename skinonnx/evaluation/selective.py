"""Selective classification: what the error rate becomes when the model may abstain (numpy only).

A *ranking* orders the images from the one the model should answer first to the one it should refuse
first (a confidence: higher = accepted earlier). Accepting the top ``k`` of ``n`` gives the coverage
``k / n`` and the selective risk (error rate among the accepted). The risk-coverage curve is that
risk at every ``k``; its area (AURC, Geifman & El-Yaniv 2017; Geifman et al. 2019) is the mean risk
over ``k = 1..n``. Two references come with it:

* random abstention (a ranking that knows nothing): the expected risk is the overall error rate at
  every coverage, so its AURC is the error rate;
* the oracle (every correct image before every error): the lowest AURC the errors allow.
  ``e_aurc = aurc - oracle_aurc`` ("excess AURC") removes the part due to the error rate itself.

Ties: images with the same confidence enter together in random order, so the curve uses the
*expected* number of errors among the first ``k`` (the errors of the tied block shared in proportion).
A ranking that ties everything therefore scores exactly the random baseline.

The rankings skinonnx reports: the distance of the probability to the decision threshold ``|p - t|``
(the model's own confidence) and, when the ONNX file has an ``ood_score`` output, that score (low =
like the training images, accepted first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..deploy.decision import accepted, predicted_positive
from .metrics import _labels, _same_length, _scores, _threshold

#: Coverages at which the sensitivity/specificity table is given, besides the deployed one.
REPORTED_COVERAGES: tuple[float, ...] = (1.0, 0.95, 0.9, 0.8, 0.7)


@dataclass(frozen=True)
class RiskCoverage:
    """The curve at ``k = 1..n`` accepted images and its areas."""

    coverage: NDArray[np.float64]  # k / n
    risk: NDArray[np.float64]  # expected error rate among the k accepted
    aurc: float
    random_aurc: float  # = overall error rate
    oracle_aurc: float
    n: int
    n_errors: int

    @property
    def e_aurc(self) -> float:
        return self.aurc - self.oracle_aurc

    def as_dict(self, *, points: int = 101) -> dict[str, Any]:
        """JSON-ready: the areas and the curve thinned to at most ``points`` coverages (for plots)."""
        keep = _thin(self.n, points)
        return {"aurc": self.aurc, "random_aurc": self.random_aurc, "oracle_aurc": self.oracle_aurc,
                "e_aurc": self.e_aurc, "n": self.n, "n_errors": self.n_errors,
                "coverage": [round(float(c), 6) for c in self.coverage[keep]],
                "risk": [round(float(r), 6) for r in self.risk[keep]]}


def _thin(n: int, points: int) -> NDArray[np.intp]:
    if n <= points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, points).round().astype(np.intp))


def correct_predictions(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> NDArray[np.bool_]:
    """True where the thresholded prediction (``p >= threshold`` = positive) matches the label."""
    truth = _labels(y_true)
    prob = _scores(y_prob)
    _same_length(truth, prob)
    return predicted_positive(prob, _threshold(threshold)) == truth.astype(bool)


def threshold_distance(y_prob: ArrayLike, threshold: float) -> NDArray[np.float64]:
    """``|p - t|``: how far each probability is from the decision threshold (higher = more confident)."""
    return np.abs(_scores(y_prob) - _threshold(threshold))


def risk_coverage(correct: ArrayLike, confidence: ArrayLike) -> RiskCoverage:
    """Risk-coverage curve of the 0/1 ``correct`` flags when images are accepted by decreasing ``confidence``."""
    ok = _labels(np.asarray(correct).astype(np.int64), "correct").astype(bool)
    conf = _scores(confidence, "confidence")
    _same_length(ok, conf)
    n = int(ok.size)
    if n == 0:
        raise ValueError("risk_coverage needs at least one image")
    errors = (~ok).astype(np.float64)
    uniq, inverse = np.unique(-conf, return_inverse=True)  # blocks of tied confidence, most confident first
    block_n = np.bincount(inverse.reshape(-1), minlength=uniq.size).astype(np.float64)
    block_err = np.bincount(inverse.reshape(-1), weights=errors, minlength=uniq.size)
    ends = np.cumsum(block_n)  # images accepted once the block is in
    k = np.arange(1, n + 1, dtype=np.float64)
    block_of_k = np.searchsorted(ends, k, side="left")  # the block the k-th image belongs to
    before_n = ends[block_of_k] - block_n[block_of_k]
    before_err = np.cumsum(block_err)[block_of_k] - block_err[block_of_k]
    expected_err = before_err + (k - before_n) * block_err[block_of_k] / block_n[block_of_k]
    risk = expected_err / k
    n_errors = int(errors.sum())
    oracle = np.maximum(0.0, k - (n - n_errors)) / k
    return RiskCoverage(coverage=k / n, risk=risk, aurc=float(risk.mean()), random_aurc=n_errors / n,
                        oracle_aurc=float(oracle.mean()), n=n, n_errors=n_errors)


def aurc_bootstrap(correct: ArrayLike, confidence: ArrayLike, *, n_resamples: int = 1000, seed: int = 0,
                   level: float = 0.95) -> dict[str, list[float]]:
    """Percentile-bootstrap intervals of the AURC and of ``random_aurc - aurc`` (images resampled together).

    The second interval says whether the ranking beats random abstention: above zero, it does.
    """
    ok = np.asarray(correct, dtype=bool)
    conf = _scores(confidence, "confidence")
    rng = np.random.default_rng(seed)
    aurc, gain = np.empty(n_resamples), np.empty(n_resamples)
    for i in range(n_resamples):
        idx = rng.integers(0, ok.size, ok.size)
        rc = risk_coverage(ok[idx], conf[idx])
        aurc[i], gain[i] = rc.aurc, rc.random_aurc - rc.aurc
    tail = 100.0 * (1.0 - level) / 2.0
    return {"aurc_ci": np.percentile(aurc, [tail, 100 - tail]).tolist(),
            "gain_over_random_ci": np.percentile(gain, [tail, 100 - tail]).tolist()}


def accept_top(confidence: ArrayLike, coverage: float) -> NDArray[np.bool_]:
    """Mask of the ``round(coverage * n)`` most confident images (ties: the earlier image first)."""
    conf = _scores(confidence, "confidence")
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must be in [0, 1], got {coverage!r}")
    keep = round(coverage * conf.size)
    order = np.argsort(-conf, kind="stable")
    mask = np.zeros(conf.size, dtype=bool)
    mask[order[:keep]] = True
    return mask


def metrics_on_accepted(y_true: ArrayLike, y_prob: ArrayLike, threshold: float,
                        accepted: ArrayLike) -> dict[str, Any]:
    """Coverage, error rate, sensitivity and specificity among the accepted images (NaN where undefined)."""
    truth = _labels(y_true).astype(bool)
    prob = _scores(y_prob)
    mask = np.asarray(accepted, dtype=bool)
    _same_length(truth, prob)
    _same_length(truth, mask)
    pred = predicted_positive(prob, _threshold(threshold))
    t, p = truth[mask], pred[mask]
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    tp, tn = int((t & p).sum()), int((~t & ~p).sum())
    nan = float("nan")
    return {"coverage": float(mask.mean()) if mask.size else nan, "n_accepted": int(mask.sum()),
            "n_positive_accepted": n_pos, "n_negative_accepted": n_neg,
            "error_rate": float(1.0 - (tp + tn) / mask.sum()) if mask.any() else nan,
            "sensitivity": tp / n_pos if n_pos else nan, "specificity": tn / n_neg if n_neg else nan}


def selective_section(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, *,
                      ood_score: ArrayLike | None = None, ood_threshold: float | None = None,
                      coverages: tuple[float, ...] = REPORTED_COVERAGES, bootstrap: int = 0, seed: int = 0,
                      confidence: float = 0.95) -> dict[str, Any]:
    """The ``selective`` block of summary.json: one curve per ranking and the sensitivity/specificity table.

    ``deployed`` is what the model does when it is deployed: with an ``ood_score`` and its
    ``ood_threshold`` it refuses ``ood_score > ood_threshold``; without, it answers every image
    (coverage 1). With ``bootstrap`` resamples each curve also gets ``aurc_ci`` and ``gain_over_random_ci``
    (see :func:`aurc_bootstrap`).
    """
    correct = correct_predictions(y_true, y_prob, threshold)
    rankings: dict[str, NDArray[np.float64]] = {"threshold_distance": threshold_distance(y_prob, threshold)}
    if ood_score is not None:
        rankings["ood_score"] = -_scores(ood_score, "ood_score")  # low score = in distribution = accepted first
        _same_length(correct, rankings["ood_score"])
    curves = {name: {**risk_coverage(correct, conf).as_dict(),
                     **(aurc_bootstrap(correct, conf, n_resamples=bootstrap, seed=seed, level=confidence)
                        if bootstrap else {"aurc_ci": None, "gain_over_random_ci": None})}
              for name, conf in rankings.items()}
    table = {name: [{"target_coverage": c, **metrics_on_accepted(y_true, y_prob, threshold, accept_top(conf, c))}
                    for c in coverages] for name, conf in rankings.items()}
    if ood_score is not None and ood_threshold is not None:
        deployed = {"rule": f"ood_score <= {float(ood_threshold):.6g}", "ood_threshold": float(ood_threshold),
                    **metrics_on_accepted(y_true, y_prob, threshold, accepted(ood_score, ood_threshold))}
    else:
        deployed = {"rule": "no ood_score output: every image is answered", "ood_threshold": None,
                    **metrics_on_accepted(y_true, y_prob, threshold, np.ones(correct.size, dtype=bool))}
    return {"risk": "error rate among accepted images at the decision threshold",
            "rankings": {"threshold_distance": "|p - threshold| (model confidence), most confident first",
                         **({"ood_score": "ood_score, lowest (most like the training images) first"}
                            if ood_score is not None else {})},
            "curves": curves, "at_coverage": table, "deployed": deployed}
