"""Per-class decision offsets (``--class-bias val`` or ``oof``, the ISIC 2019 winners' step). Pure numpy, no torch.

The diagnosis of an image is ``argmax_c(log p_c + b_c)``: ``p`` are the calibrated probabilities (softmax of the
logits divided by the temperature) and ``b`` one additive offset per class **on the log-probabilities** (so on
the calibrated logits z/T too: the argmax is the same), the rule the ONNX graph applies. ``b = 0`` is argmax.

:func:`tune_class_bias` maximises balanced accuracy (the mean per-class recall) on validation or out-of-fold
predictions by exact coordinate ascent: for one class, the other offsets fixed, each image changes its decision
at one value of that class's offset; sorting those break points gives balanced accuracy on every interval at
once (O(N log N)), and the offset moves to the middle of the best interval (nearest the current value among
equally good ones) only when that is strictly better. Rounds over all classes repeat until none moves. The
result is centred (mean 0; a common shift changes no decision); nothing better than argmax leaves it all zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import log_softmax

from ..deploy.decision import biased_decision  # THE rule (the graph's); re-exported for training

MAX_ROUNDS = 20
#: how far below the lowest (above the highest) break point an offset goes when "never" ("always") is best
OUTER_MARGIN = 1.0
_EPS = 1e-12
__all__ = ["ClassBias", "balanced_accuracy", "biased_decision", "log_probabilities", "tune_class_bias"]


@dataclass(frozen=True)
class ClassBias:
    offsets: list[float]  # one per class, added to the log-probabilities
    balanced_accuracy_before: float  # argmax
    balanced_accuracy_after: float  # argmax(log p + offsets), on the data it was tuned on
    rounds: int

    def as_dict(self) -> dict[str, object]:
        return {"offsets": self.offsets, "balanced_accuracy_before": self.balanced_accuracy_before,
                "balanced_accuracy_after": self.balanced_accuracy_after, "rounds": self.rounds}


def log_probabilities(logits: ArrayLike, temperature: float = 1.0) -> NDArray[np.float64]:
    """log softmax(logits / temperature): what the offsets are added to."""
    return log_softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def balanced_accuracy(labels: ArrayLike, decided: ArrayLike, n_classes: int) -> float:
    """Mean recall over the classes present in ``labels`` (scikit-learn's balanced_accuracy_score)."""
    y, d = np.asarray(labels, dtype=np.int64), np.asarray(decided, dtype=np.int64)
    n = np.bincount(y, minlength=n_classes)
    hits = np.bincount(y[y == d], minlength=n_classes)
    present = n > 0
    return float(np.mean(hits[present] / n[present])) if present.any() else float("nan")


def _best_offset(scores: NDArray[np.float64], y: NDArray[np.int64], k: int, current: float,
                 weight: NDArray[np.float64]) -> tuple[float, float]:
    """The offset of class ``k`` (others fixed) maximising balanced accuracy, and that accuracy.

    ``scores``: log p + offsets with class k's offset at 0; ``weight[c]`` = 1 / (n_c * classes present)."""
    others = scores.copy()
    others[:, k] = -np.inf
    rival = others.argmax(axis=1)
    breaks = others[np.arange(len(y)), rival] - scores[:, k]  # class k is decided iff its offset > break
    base = float(np.sum(weight[y] * (y == rival)))  # no image decided k
    gain = weight[y] * ((y == k).astype(np.float64) - (y == rival))
    order = np.argsort(breaks, kind="stable")
    b = breaks[order]
    value = base + np.concatenate([[0.0], np.cumsum(gain[order])])  # value[r]: the r lowest break points passed
    # offsets realising each r: below all, between distinct neighbours, above all
    mids = np.concatenate([[b[0] - OUTER_MARGIN], (b[:-1] + b[1:]) / 2, [b[-1] + OUTER_MARGIN]])
    valid = np.concatenate([[True], b[:-1] < b[1:], [True]])
    best = np.max(value[valid])
    candidates = np.flatnonzero(valid & (value >= best - _EPS))
    pick = candidates[np.argmin(np.abs(mids[candidates] - current))]
    return float(mids[pick]), float(value[pick])


def tune_class_bias(log_probs: ArrayLike, labels: ArrayLike, *, max_rounds: int = MAX_ROUNDS) -> ClassBias:
    """Offsets maximising balanced accuracy of ``argmax(log_probs + offsets)`` against ``labels`` (see the module
    docstring). ``log_probs``: (N, K) log-probabilities, e.g. :func:`log_probabilities`."""
    lp = np.asarray(log_probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if lp.ndim != 2 or lp.shape[1] < 2 or lp.shape[0] != y.shape[0] or y.ndim != 1:
        raise ValueError(f"log_probs must be (N, K) with K >= 2 and labels (N,), got {lp.shape} and {y.shape}")
    if not np.isfinite(lp).all():
        raise ValueError("log_probs must be finite")
    k = lp.shape[1]
    if y.size and not np.isin(y, np.arange(k)).all():
        raise ValueError(f"labels must be class indices 0..{k - 1}")
    offsets = np.zeros(k)
    before = balanced_accuracy(y, biased_decision(lp, offsets), k)
    counts = np.bincount(y, minlength=k)
    present = counts > 0
    if y.size == 0 or present.sum() < 2:
        return ClassBias(offsets.tolist(), before, before, 0)
    weight = np.where(present, 1.0 / np.maximum(counts, 1) / present.sum(), 0.0)
    now, rounds, moved = before, 0, True
    while moved and rounds < max_rounds:
        rounds, moved = rounds + 1, False
        for c in range(k):
            shifted = lp + offsets
            shifted[:, c] = lp[:, c]
            value, score = _best_offset(shifted, y, c, offsets[c], weight)
            if score > now + _EPS:
                offsets[c], now, moved = value, score, True
    if now <= before + _EPS:
        return ClassBias([0.0] * k, before, before, rounds)
    offsets -= offsets.mean()
    after = balanced_accuracy(y, biased_decision(lp, offsets), k)
    return ClassBias([float(v) for v in offsets], before, after, rounds)
