"""Binary classification metrics, ISIC-challenge style (numpy only, no torch).

Conventions used throughout:

* the positive class is *malignant*, label ``1``; benign is ``0``;
* ``y_prob`` is the model's probability (any finite score works for the rank metrics) of the
  positive class, and a case is predicted positive when ``y_prob >= threshold``;
* a metric whose denominator is empty (no positives -> sensitivity, only one class -> AUC, no
  predicted positives -> PPV, ...) is ``float('nan')``: these functions never raise and never
  warn on such data. Malformed input (labels other than 0/1, non-finite scores, length
  mismatch) raises ``ValueError``.

The rank metrics (ROC AUC, average precision, partial AUC) are computed from per-score
histograms of positives and negatives, so one kernel serves both the point estimate and the
vectorised bootstrap in :func:`bootstrap_ci`. Tied scores are handled like scikit-learn: one
ROC point per distinct score (a tie between classes is a diagonal ROC segment).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..deploy.decision import predicted_positive

#: Scalar metrics reported by :func:`binary_metrics` and bootstrapped by :func:`bootstrap_ci`.
METRIC_NAMES: tuple[str, ...] = (
    "accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "ppv",
    "npv",
    "f1",
    "roc_auc",
    "average_precision",
    "pauc_80",
    "auc_sens_80",
)
#: Sensitivity floor of both partial AUCs: ``pauc_80`` (ISIC 2024: raw area above TPR 0.8, max 0.2)
#: and ``auc_sens_80`` (ISIC 2018-2019 scorer: area under the ROC from the point of 80 % sensitivity, max 1).
PAUC_MIN_TPR = 0.80
RANK_METRICS = ("roc_auc", "average_precision", "pauc_80", "auc_sens_80")  # threshold-free
#: The two partial AUCs labelled for people (a bare "0.034 / 0.220" reads like a fraction).
PARTIAL_AUC_LABELS = {"pauc_80": "pAUC above 80 % sensitivity (ISIC 2024, max 0.2)",
                      "auc_sens_80": "AUC, Sens > 80 % (ISIC 2018-2019 scorer, max 1)"}
PARTIAL_AUC_NOTE = ("pauc_80 = " + PARTIAL_AUC_LABELS["pauc_80"] + "; auc_sens_80 = "
                    + PARTIAL_AUC_LABELS["auc_sens_80"])

_BOOTSTRAP_CHUNK = 64  # resamples drawn and scored together; bounds memory at 64 x n


def fmt(value: Any, digits: int = 3) -> str:
    """A metric for people: fixed decimals, 'n/a' where undefined (None or NaN)."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def sci(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1e}"


@dataclass(frozen=True)
class ConfusionCounts:
    """Counts of a binary confusion matrix (positive = malignant)."""

    tp: int
    fp: int
    tn: int
    fn: int

    def matrix(self) -> list[list[int]]:
        """``[[tn, fp], [fn, tp]]``: rows = truth (0, 1), columns = prediction, as scikit-learn."""
        return [[self.tn, self.fp], [self.fn, self.tp]]

    def as_dict(self) -> dict[str, int]:
        return {"tn": self.tn, "fp": self.fp, "fn": self.fn, "tp": self.tp}

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def n_positive(self) -> int:
        return self.tp + self.fn


# --------------------------------------------------------------------------- input checks


def _labels(y: ArrayLike, name: str = "y_true") -> NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype != bool and arr.size and not np.isin(arr, (0, 1)).all():
        bad = sorted({str(v) for v in np.unique(arr[~np.isin(arr, (0, 1))])})[:5]
        raise ValueError(f"{name} must contain only 0 and 1, found {', '.join(bad)}")
    return arr.astype(np.int64)


def _scores(y: ArrayLike, name: str = "y_prob") -> NDArray[np.float64]:
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or infinity)")
    return arr


def _same_length(a: NDArray[Any], b: NDArray[Any]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"y_true has {a.shape[0]} entries but the other input has {b.shape[0]}")


def _threshold(threshold: float) -> float:
    value = float(threshold)
    if not np.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    return value


# --------------------------------------------------------------------------- count metrics


def _ratio(num: ArrayLike, den: ArrayLike) -> NDArray[np.float64]:
    """num / den elementwise, NaN (silently) where den == 0."""
    num_a = np.asarray(num, dtype=np.float64)
    den_a = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num_a, den_a).shape, np.nan)
    np.divide(num_a, den_a, out=out, where=den_a > 0)
    return out


def _count_metrics(
    tp: ArrayLike, fp: ArrayLike, tn: ArrayLike, fn: ArrayLike
) -> dict[str, NDArray[np.float64]]:
    """Threshold metrics from (arrays of) confusion counts; vectorised over resamples."""
    tp_a, fp_a, tn_a, fn_a = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    sens = _ratio(tp_a, tp_a + fn_a)
    spec = _ratio(tn_a, tn_a + fp_a)
    return {
        "accuracy": _ratio(tp_a + tn_a, tp_a + fp_a + tn_a + fn_a),
        "balanced_accuracy": (sens + spec) / 2.0,  # NaN if either class is absent
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _ratio(tp_a, tp_a + fp_a),
        "npv": _ratio(tn_a, tn_a + fn_a),
        # 2TP / (2TP + FP + FN) == harmonic mean of PPV and sensitivity, and 0 (not NaN) when
        # there are positives but none is found; NaN only with no positives and none predicted.
        "f1": _ratio(2.0 * tp_a, 2.0 * tp_a + fp_a + fn_a),
    }


def confusion(y_true: ArrayLike, y_pred: ArrayLike) -> ConfusionCounts:
    """Confusion counts of 0/1 predictions ``y_pred`` against labels ``y_true``."""
    truth = _labels(y_true).astype(bool)
    pred = _labels(y_pred, "y_pred").astype(bool)
    _same_length(truth, pred)
    return ConfusionCounts(
        tp=int(np.count_nonzero(truth & pred)),
        fp=int(np.count_nonzero(~truth & pred)),
        tn=int(np.count_nonzero(~truth & ~pred)),
        fn=int(np.count_nonzero(truth & ~pred)),
    )


def _from_confusion(name: str, y_true: ArrayLike, y_pred: ArrayLike) -> float:
    c = confusion(y_true, y_pred)
    return float(_count_metrics(c.tp, c.fp, c.tn, c.fn)[name])


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """(TP + TN) / N."""
    return _from_confusion("accuracy", y_true, y_pred)


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """(sensitivity + specificity) / 2; NaN when either class is absent from ``y_true``."""
    return _from_confusion("balanced_accuracy", y_true, y_pred)


def sensitivity(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """TP / (TP + FN), a.k.a. recall / TPR; NaN without positives."""
    return _from_confusion("sensitivity", y_true, y_pred)


def specificity(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """TN / (TN + FP), a.k.a. TNR; NaN without negatives."""
    return _from_confusion("specificity", y_true, y_pred)


def ppv(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """TP / (TP + FP), a.k.a. precision; NaN when nothing is predicted positive."""
    return _from_confusion("ppv", y_true, y_pred)


precision = ppv


def npv(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """TN / (TN + FN); NaN when nothing is predicted negative."""
    return _from_confusion("npv", y_true, y_pred)


def f1(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """2TP / (2TP + FP + FN); NaN only when there are neither positives nor positive predictions."""
    return _from_confusion("f1", y_true, y_pred)


# --------------------------------------------------------------------------- rank metrics


def _score_codes(y_prob: NDArray[np.float64]) -> tuple[NDArray[np.intp], int]:
    """Code each score by the rank of its distinct value, 0 = highest score."""
    uniq, inverse = np.unique(y_prob, return_inverse=True)
    return (uniq.size - 1 - inverse.reshape(-1)).astype(np.intp), int(uniq.size)


def _rank_metrics(
    pos_hist: NDArray[np.float64], neg_hist: NDArray[np.float64], min_tpr: float
) -> dict[str, NDArray[np.float64]]:
    """ROC AUC, average precision and both partial AUCs for each row of (B, U) histograms.

    Column u counts the positives / negatives whose score is the u-th highest distinct score,
    so the cumulative sums along a row are the TP / FP counts at threshold "score >= u-th".
    """
    tp = np.cumsum(pos_hist, axis=1)
    fp = np.cumsum(neg_hist, axis=1)
    n_pos = tp[:, -1]
    n_neg = fp[:, -1]
    has_pos = n_pos > 0
    has_both = has_pos & (n_neg > 0)
    zeros = np.zeros((tp.shape[0], 1))
    tpr = np.concatenate([zeros, tp / np.where(has_pos, n_pos, 1.0)[:, None]], axis=1)
    fpr = np.concatenate([zeros, fp / np.where(n_neg > 0, n_neg, 1.0)[:, None]], axis=1)

    # Trapezoids under the ROC polyline (equals the Mann-Whitney U statistic, ties count 1/2).
    auc = np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]), axis=1) / 2.0

    # Average precision as in scikit-learn: sum over distinct thresholds of
    # (recall increment) x (precision at that threshold); no interpolation.
    predicted = tp + fp
    prec = tp / np.where(predicted > 0, predicted, 1.0)
    ap = np.sum(pos_hist * prec, axis=1) / np.where(has_pos, n_pos, 1.0)

    # Partial AUC above min_tpr: integral over TPR in [min_tpr, 1] of (1 - FPR(TPR)) along the
    # ROC polyline. Each segment (a, c) -> (b, d) in (TPR, FPR) is linear, so its clipped part
    # [lo, b] with lo = max(a, min_tpr) contributes an exact trapezoid.
    a, b = tpr[:, :-1], tpr[:, 1:]
    c, d = fpr[:, :-1], fpr[:, 1:]
    lo = np.maximum(a, min_tpr)
    height = np.clip(b - lo, 0.0, None)
    rise = b - a
    frac = np.divide(lo - a, rise, out=np.zeros_like(rise), where=rise > 0)
    fpr_lo = c + (d - c) * frac
    pauc = np.sum(height * (1.0 - (fpr_lo + d) / 2.0), axis=1)

    # ISIC 2018-2019 "AUC, Sens > 80%": integral of TPR over FPR along the same part of the polyline,
    # from the point where it reaches TPR = min_tpr (FPR interpolated there) to (1, 1). A segment
    # that ends at or above min_tpr contributes the trapezoid from (fpr_lo, lo) to (d, b).
    reached = b >= min_tpr
    above = np.sum(np.where(reached, (d - fpr_lo) * (lo + b) / 2.0, 0.0), axis=1)

    nan = np.nan
    return {
        "roc_auc": np.where(has_both, auc, nan),
        "average_precision": np.where(has_pos, ap, nan),
        "pauc": np.where(has_both, pauc, nan),
        "auc_above": np.where(has_both, above, nan),
    }


def _point_rank_metrics(y_true: ArrayLike, y_prob: ArrayLike, min_tpr: float) -> dict[str, float]:
    truth = _labels(y_true)
    scores = _scores(y_prob)
    _same_length(truth, scores)
    if not 0.0 <= min_tpr <= 1.0:
        raise ValueError(f"min_tpr must be in [0, 1], got {min_tpr!r}")
    if truth.size == 0:
        return {"roc_auc": np.nan, "average_precision": np.nan, "pauc": np.nan, "auc_above": np.nan}
    codes, n_unique = _score_codes(scores)
    pos = np.bincount(codes, weights=truth.astype(np.float64), minlength=n_unique)
    neg = np.bincount(codes, minlength=n_unique) - pos
    out = _rank_metrics(pos[None, :], neg[None, :], float(min_tpr))
    return {k: float(v[0]) for k, v in out.items()}


def roc_auc(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Area under the ROC curve of the scores ``y_prob``; NaN unless both classes are present."""
    return _point_rank_metrics(y_true, y_prob, PAUC_MIN_TPR)["roc_auc"]


def average_precision(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Average precision (step-wise area under the precision-recall curve, as scikit-learn).

    NaN without positives; 1.0 when every case is positive.
    """
    return _point_rank_metrics(y_true, y_prob, PAUC_MIN_TPR)["average_precision"]


def partial_roc_auc_above_sensitivity(
    y_true: ArrayLike, y_prob: ArrayLike, min_tpr: float = PAUC_MIN_TPR
) -> float:
    """Raw partial ROC AUC over the high-sensitivity region TPR >= ``min_tpr`` (ISIC definition).

    This is the area of the part of the ROC plane that lies under the ROC curve *and* above the
    horizontal line TPR = ``min_tpr``, i.e. ``integral_{min_tpr}^{1} (1 - FPR(TPR)) dTPR`` with
    the ROC curve linearly interpolated between its points (interpolated exactly at
    TPR = ``min_tpr``). It equals what the ISIC challenge scoring code (``p_auc_tpr``) computes
    by swapping the axes (labels 1 - y, scores -p, so "FPR <= 1 - min_tpr" in the swapped space
    is "TPR >= min_tpr" here) and taking the raw area under the swapped curve up to
    ``max_fpr = 1 - min_tpr``. (The older ``auc_above_sensitivity`` of isic-challenge-scoring
    instead integrates TPR over FPR along the same part of the curve, whose maximum is 1.)

    It is *not* ``sklearn.metrics.roc_auc_score(max_fpr=...)``, which restricts FPR (the
    low-false-positive region) and applies the McClish standardisation. No standardisation
    here: the value ranges from 0 (every positive ranked below every negative) to
    ``1 - min_tpr`` (0.2 for the default, a perfect ranking); an uninformative classifier
    scores ``(1 - min_tpr)**2 / 2`` (0.02). NaN unless both classes are present.
    """
    return _point_rank_metrics(y_true, y_prob, float(min_tpr))["pauc"]


def auc_above_sensitivity(y_true: ArrayLike, y_prob: ArrayLike, min_tpr: float = PAUC_MIN_TPR) -> float:
    """The ISIC 2018-2019 challenge scorer's "AUC, Sens > 80%" (key ``auc_sens_80``), for any ``min_tpr``.

    ``integral_{f}^{1} TPR dFPR`` where ``f`` is the false positive rate at which the ROC polyline
    first reaches TPR = ``min_tpr`` (linearly interpolated): the area under the ROC curve to the
    right of that point, TPR integrated over FPR (isic-challenge-scoring ``auc_above_sensitivity``:
    ``sklearn.metrics.roc_curve(drop_intermediate=False)``, a point inserted at TPR = ``min_tpr``,
    ``sklearn.metrics.auc`` of the rest). Not standardised: 1.0 for a perfect ranking,
    ``(1 - min_tpr**2) / 2`` for chance (0.18 at 80 %), 0 for a reversed ranking. See
    :func:`partial_roc_auc_above_sensitivity` for the ISIC 2024 definition (``pauc_80``).
    NaN unless both classes are present.
    """
    return _point_rank_metrics(y_true, y_prob, float(min_tpr))["auc_above"]


# --------------------------------------------------------------------------- summaries


def binary_metrics(y_true: ArrayLike, y_prob: ArrayLike, threshold: float) -> dict[str, Any]:
    """All metrics at one operating point, JSON-ready.

    Keys: the :data:`METRIC_NAMES` (floats, NaN where undefined), ``threshold`` (float),
    ``n`` and ``n_positive`` (ints) and ``confusion`` (``{"tn", "fp", "fn", "tp"}`` ints).
    """
    truth = _labels(y_true)
    scores = _scores(y_prob)
    _same_length(truth, scores)
    thr = _threshold(threshold)
    counts = confusion(truth, predicted_positive(scores, thr).astype(np.int64))
    result: dict[str, Any] = {
        name: float(value)
        for name, value in _count_metrics(counts.tp, counts.fp, counts.tn, counts.fn).items()
    }
    rank = _point_rank_metrics(truth, scores, PAUC_MIN_TPR)
    result["roc_auc"] = rank["roc_auc"]
    result["average_precision"] = rank["average_precision"]
    result["pauc_80"] = rank["pauc"]
    result["auc_sens_80"] = rank["auc_above"]
    ordered: dict[str, Any] = {name: result[name] for name in METRIC_NAMES}
    ordered["threshold"] = thr
    ordered["n"] = counts.n
    ordered["n_positive"] = counts.n_positive
    ordered["confusion"] = counts.as_dict()
    return ordered


def _bootstrap_index_chunks(
    truth: NDArray[np.int64], n_resamples: int, seed: int
) -> Iterator[NDArray[np.intp]]:
    """Stratified resample indices (positives, then negatives), ``_BOOTSTRAP_CHUNK`` rows at a time."""
    return strata_index_chunks([np.flatnonzero(truth == 1), np.flatnonzero(truth == 0)], n_resamples, seed)


def strata_index_chunks(
    groups: list[NDArray[np.intp]], n_resamples: int, seed: int
) -> Iterator[NDArray[np.intp]]:
    """Resample indices drawn within each stratum of ``groups`` (keeping its size), ``_BOOTSTRAP_CHUNK`` rows at
    a time; the columns are the strata in order. Binary metrics use (positives, negatives), K-class ones a stratum
    per class.

    Each chunk has its own child seed of ``SeedSequence(seed)``, so the draws do not depend on
    memory-driven batching, and the first k resamples are the same whatever ``n_resamples``.
    """
    n_chunks = -(-n_resamples // _BOOTSTRAP_CHUNK)
    for k, child in enumerate(np.random.SeedSequence(seed).spawn(n_chunks)):
        rng = np.random.default_rng(child)
        rows = min(_BOOTSTRAP_CHUNK, n_resamples - k * _BOOTSTRAP_CHUNK)
        parts = [g[rng.integers(0, g.size, size=(rows, g.size))] for g in groups if g.size]
        yield np.concatenate(parts, axis=1) if parts else np.empty((rows, 0), dtype=np.intp)


def stratified_bootstrap_indices(
    y_true: ArrayLike, n_resamples: int, seed: int = 0
) -> NDArray[np.intp]:
    """The (n_resamples, n) index matrix :func:`bootstrap_ci` uses for this ``seed``.

    Each row draws, with replacement, as many positives from the positives and as many negatives
    from the negatives as the data holds (positives first), so every resample keeps the class
    counts.
    """
    truth = _labels(y_true)
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    return np.concatenate(list(_bootstrap_index_chunks(truth, int(n_resamples), seed)), axis=0)


def _resample_metrics(
    truth: NDArray[np.int64], scores: NDArray[np.float64], thr: float, idx: NDArray[np.intp],
    codes: NDArray[np.intp], n_unique: int,
) -> dict[str, NDArray[np.float64]]:
    """Every scalar metric for each row of the index matrix ``idx`` (any resampling scheme)."""
    rows = idx.shape[0]
    is_pos = truth[idx].astype(bool)
    pred = predicted_positive(scores, thr)[idx]
    tp = np.count_nonzero(is_pos & pred, axis=1)
    fp = np.count_nonzero(~is_pos & pred, axis=1)
    fn = np.count_nonzero(is_pos & ~pred, axis=1)
    tn = idx.shape[1] - tp - fp - fn
    out = _count_metrics(tp, fp, tn, fn)
    if n_unique == 0:
        for name in ("roc_auc", "average_precision", "pauc_80", "auc_sens_80"):
            out[name] = np.full(rows, np.nan)
        return out
    flat = (codes[idx] + (np.arange(rows) * n_unique)[:, None]).ravel()
    total = np.bincount(flat, minlength=rows * n_unique).reshape(rows, n_unique)
    pos = np.bincount(flat, weights=is_pos.ravel(), minlength=rows * n_unique)
    pos = pos.reshape(rows, n_unique)
    rank = _rank_metrics(pos, total - pos, PAUC_MIN_TPR)
    out["roc_auc"] = rank["roc_auc"]
    out["average_precision"] = rank["average_precision"]
    out["pauc_80"] = rank["pauc"]
    out["auc_sens_80"] = rank["auc_above"]
    return out


def bootstrap_ci(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    threshold: float,
    *,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Stratified-bootstrap percentile intervals for every metric in :data:`METRIC_NAMES`.

    Positives and negatives are resampled separately, keeping their counts (see
    :func:`stratified_bootstrap_indices`), and the threshold stays fixed. Resamples where a
    metric is undefined are ignored; a metric undefined in every resample gets ``(nan, nan)``.
    Deterministic for a given ``seed``.
    """
    truth = _labels(y_true)
    scores = _scores(y_prob)
    _same_length(truth, scores)
    thr = _threshold(threshold)
    n_resamples = int(n_resamples)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    codes, n_unique = _score_codes(scores) if scores.size else (np.empty(0, np.intp), 0)

    chunks = [
        _resample_metrics(truth, scores, thr, idx, codes, n_unique)
        for idx in _bootstrap_index_chunks(truth, n_resamples, seed)
    ]
    tail = 100.0 * (1.0 - confidence) / 2.0
    intervals: dict[str, tuple[float, float]] = {}
    for name in METRIC_NAMES:
        values = np.concatenate([chunk[name] for chunk in chunks])
        values = values[~np.isnan(values)]  # == nanpercentile, without its all-NaN warning
        if values.size == 0:
            intervals[name] = (float("nan"), float("nan"))
        else:
            lo, hi = np.percentile(values, [tail, 100.0 - tail])
            intervals[name] = (float(lo), float(hi))
    return intervals


def classification_report_text(
    y_true: ArrayLike, y_pred: ArrayLike, class_names: tuple[str, ...] | list[str]
) -> str:
    """scikit-learn's text report; class ``i`` is named ``class_names[i]``; undefined -> nan."""
    from sklearn.metrics import classification_report

    names = [str(name) for name in class_names]
    if len(names) < 2:
        raise ValueError("class_names needs at least two names")
    truth = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if truth.shape != pred.shape or truth.ndim != 1:
        raise ValueError("y_true and y_pred must be one-dimensional and of equal length")
    labels = list(range(len(names)))
    for arr, what in ((truth, "y_true"), (pred, "y_pred")):
        if arr.size and not np.isin(arr, labels).all():
            raise ValueError(f"{what} must contain only class indices 0..{len(names) - 1}")
    report = classification_report(
        truth.astype(np.int64), pred.astype(np.int64), labels=labels, target_names=names,
        digits=4, zero_division=np.nan,
    )
    return str(report)


def evaluate_predictions(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, *, bootstrap: int = 1000,
                         seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Every ISIC metric at ``threshold`` with stratified-bootstrap percentile intervals.

    ``y_true`` is 1 for the positive (malignant) class, ``y_prob`` its probability. Returns
    ``{"threshold", "metrics" (see metrics.binary_metrics), "ci"}`` where ``ci`` maps each metric
    to ``[low, high]`` (NaN where undefined in every resample), or is None when ``bootstrap`` is 0.
    """
    metrics = binary_metrics(y_true, y_prob, threshold)
    ci = None
    if bootstrap:
        intervals = bootstrap_ci(y_true, y_prob, threshold, n_resamples=bootstrap, confidence=confidence, seed=seed)
        ci = {name: [lo, hi] for name, (lo, hi) in intervals.items()}
    return {"threshold": float(threshold), "metrics": metrics, "ci": ci}
