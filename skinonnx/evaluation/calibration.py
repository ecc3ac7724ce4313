"""Temperature scaling and calibration measures for the 2-class softmax model (no torch).

Temperature scaling (Guo et al., 2017) divides the logits by one scalar T > 0 fitted on
validation data to minimise the negative log-likelihood; it changes confidences but never the
predicted class (nor the ranking, hence not the AUC).

Calibration is measured on the *confidence of the predicted class*, the standard ECE
definition of Guo et al.: for a positive-class probability p the prediction is malignant when
p >= 0.5 and its confidence is max(p, 1 - p). Confidences go into ``n_bins`` equal-width bins
over [0, 1], right-closed ((0, 1/M], (1/M, 2/M], ... ; with two classes only the upper half
can be occupied), and

    ECE = sum over bins of |bin| / N * |accuracy(bin) - mean confidence(bin)|.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize_scalar
from scipy.special import logsumexp

from .metrics import _labels, _same_length, _scores

TEMPERATURE_BOUNDS = (0.05, 20.0)
CALIBRATION_BINS = 10


def _logits(logits: ArrayLike) -> NDArray[np.float64]:
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("logits must be finite")
    return arr


def _nll(logits: NDArray[np.float64], labels: NDArray[np.int64], temperature: float) -> float:
    z = logits / temperature
    return float(np.mean(logsumexp(z, axis=1) - z[np.arange(z.shape[0]), labels]))


def negative_log_likelihood(logits: ArrayLike, labels: ArrayLike, temperature: float = 1.0) -> float:
    """Mean NLL of ``softmax(logits / temperature)`` against class-index ``labels`` (what temperature scaling
    minimises)."""
    return _nll(_logits(logits), np.asarray(labels, dtype=np.int64), float(temperature))


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """Temperature T minimising the mean NLL of ``softmax(logits / T)`` against ``labels``.

    ``logits`` is (N, 2) (any K >= 2 works; ``labels`` are then class indices). The search is
    over log T with a bounded scalar minimiser in :data:`TEMPERATURE_BOUNDS`; a result at a
    bound means the data want a more extreme T (e.g. perfectly separable validation data push
    T towards 0). T > 1 softens an overconfident model.
    """
    z = _logits(logits)
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != z.shape[0]:
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {y.shape}")
    if z.shape[0] == 0:
        raise ValueError("cannot fit a temperature on zero samples")
    if not np.isin(y, np.arange(z.shape[1])).all():
        raise ValueError(f"labels must be class indices 0..{z.shape[1] - 1}")
    y = y.astype(np.int64)
    lo, hi = np.log(TEMPERATURE_BOUNDS[0]), np.log(TEMPERATURE_BOUNDS[1])
    result = minimize_scalar(
        lambda log_t: _nll(z, y, float(np.exp(log_t))),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(result.x))


def _checked(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    truth = _labels(y_true)
    prob = _scores(y_prob)
    _same_length(truth, prob)
    if prob.size and (prob.min() < 0.0 or prob.max() > 1.0):
        raise ValueError("y_prob must be probabilities in [0, 1]")
    return truth, prob


def brier_score(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean squared error of the positive-class probability; NaN for empty input."""
    truth, prob = _checked(y_true, y_prob)
    if truth.size == 0:
        return float("nan")
    return float(np.mean((prob - truth) ** 2))


def reliability_curve(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> dict[str, Any]:
    """Per-bin data for a reliability diagram, on the confidence of the predicted class.

    Returns lists: ``bin_edges`` (n_bins + 1), and per bin ``confidence`` (mean confidence),
    ``accuracy`` (fraction of correct predictions) and ``count``; empty bins have NaN
    confidence and accuracy. Binning as in the module docstring, so this is exactly what
    :func:`expected_calibration_error` sums.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins!r}")
    n_bins = int(n_bins)
    truth, prob = _checked(y_true, y_prob)
    pred = prob >= 0.5
    conf = np.where(pred, prob, 1.0 - prob)
    correct = (pred == truth.astype(bool)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # right-closed bins: conf in (edges[m], edges[m+1]] -> m
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    correct_sum = np.bincount(which, weights=correct, minlength=n_bins)
    nonempty = count > 0
    mean_conf = np.full(n_bins, np.nan)
    acc = np.full(n_bins, np.nan)
    np.divide(conf_sum, count, out=mean_conf, where=nonempty)
    np.divide(correct_sum, count, out=acc, where=nonempty)
    return {
        "bin_edges": edges.tolist(),
        "confidence": mean_conf.tolist(),
        "accuracy": acc.tolist(),
        "count": [int(c) for c in count],
    }


def expected_calibration_error(y_true: ArrayLike, y_prob: ArrayLike, n_bins: int = 10) -> float:
    """ECE over equal-width confidence bins (see the module docstring); NaN for empty input."""
    curve = reliability_curve(y_true, y_prob, n_bins)
    count = np.asarray(curve["count"], dtype=np.float64)
    total = count.sum()
    if total == 0:
        return float("nan")
    gap = np.abs(np.asarray(curve["accuracy"]) - np.asarray(curve["confidence"]))
    return float(np.sum(np.where(count > 0, count * np.nan_to_num(gap), 0.0)) / total)


def calibration_report(y_true: ArrayLike, prob_after: ArrayLike, prob_before: ArrayLike | None = None, *,
                       n_bins: int = CALIBRATION_BINS) -> dict[str, Any]:
    """ECE and Brier score of calibrated (``after``) and, if given, uncalibrated (``before``) probabilities.

    Also the reliability-diagram bins of each (see calibration.reliability_curve); the
    ``*_before`` entries are None without ``prob_before``.
    """
    truth = np.asarray(y_true)
    probs = {"before": prob_before, "after": prob_after}
    out: dict[str, Any] = {"n": int(truth.size), "n_positive": int(np.count_nonzero(truth == 1))}
    for what, func in (("ece", expected_calibration_error), ("brier", brier_score)):
        for tag, prob in probs.items():
            out[f"{what}_{tag}"] = None if prob is None else (
                func(truth, prob, n_bins) if what == "ece" else func(truth, prob))
    for tag, prob in probs.items():
        curve = None if prob is None else reliability_curve(truth, prob, n_bins)
        if curve is not None:
            curve["bin_edges"] = [round(e, 12) for e in curve["bin_edges"]]
        out[f"reliability_{tag}"] = curve
    return out
