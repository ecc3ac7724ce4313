"""Metrics for K classes, with stratified-bootstrap CIs (numpy only, no torch).

* ``balanced_accuracy``: the mean over classes of their recall (ISIC 2018/2019's headline; classes absent from
  ``y_true`` are left out, as scikit-learn's ``balanced_accuracy_score``);
* per class, one-vs-rest: ``auc`` (the class's probability against the rest), ``sensitivity`` (recall) and
  ``specificity`` of the decided labels; ``macro_auc``: the mean of the defined per-class AUCs (with every class
  present, scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``);
* ``confusion``: counts, rows = truth, columns = decision (scikit-learn's ``confusion_matrix``), and
  ``confusion_normalised``: each row divided by its count (None for a class absent from ``y_true``);
* ``isic2017`` where the data has both classes: ISIC 2017 Part 3's melanoma AUC, seborrheic-keratosis AUC and
  their mean (class names matched by :data:`ISIC2017_NAMES`);
* ``malignant``: with a malignancy group, every binary metric (:func:`metrics.binary_metrics`) of
  ``p_malignant`` = the sum of the group's probabilities, at its threshold.

The bootstrap resamples within each class, keeping the class counts (:func:`metrics.strata_index_chunks`, the
binary bootstrap's draws with a stratum per class); a resample where a metric is undefined is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .metrics import (
    PAUC_MIN_TPR,
    _rank_metrics,
    _score_codes,
    binary_metrics,
    bootstrap_ci,
    roc_auc,
    strata_index_chunks,
)

#: ISIC 2017 Part 3's two scored classes and the class names (lower case, '-'/' ' read as '_') that mean them
ISIC2017_NAMES: dict[str, tuple[str, ...]] = {"melanoma": ("melanoma", "mel"),
                                              "seborrheic_keratosis": ("seborrheic_keratosis", "sk")}
PER_CLASS = ("auc", "sensitivity", "specificity")
#: the two sides of a K-class model's malignancy group in the binary sections of a report (summary.json's
#: ``positive_class`` for more than two classes)
MALIGNANT_GROUP_NAME = "malignant"
OTHER_GROUP_NAME = "not malignant"


def binary_class_names(summary: Mapping[str, Any]) -> tuple[str, str]:
    """(negative, positive) names of a `test` summary's binary sections: the two classes, or for more than two
    the malignancy group against the rest (the summary has a ``multiclass`` block then)."""
    pos = str(summary["positive_class"])
    if summary.get("multiclass"):
        return OTHER_GROUP_NAME, pos
    return next(str(c) for c in summary["classes"] if c != pos), pos


def malignant_probability(probs: ArrayLike, group: Sequence[int]) -> NDArray[np.float64]:
    """``p_malignant``: the summed probability of the malignancy group's classes (one column for two classes)."""
    return np.asarray(probs, dtype=np.float64)[:, list(group)].sum(axis=1)


def malignant_truth(labels: ArrayLike, group: Sequence[int]) -> NDArray[np.int64]:
    """1 where the true class is in the malignancy group."""
    return np.isin(np.asarray(labels), list(group)).astype(np.int64)


def _class_labels(y: ArrayLike, k: int, name: str) -> NDArray[np.int64]:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size and not np.isin(arr, np.arange(k)).all():
        raise ValueError(f"{name} must contain only class indices 0..{k - 1}")
    return arr.astype(np.int64)


def _probabilities(probs: ArrayLike, n: int) -> NDArray[np.float64]:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.shape[0] != n:
        raise ValueError(f"probabilities must have shape ({n}, K) with K >= 2, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("probabilities must be finite")
    return arr


def isic2017_indices(classes: Sequence[str]) -> tuple[int, int] | None:
    """(melanoma, seborrheic keratosis) class indices when the data has both, else None."""
    norm = [c.strip().lower().replace("-", "_").replace(" ", "_") for c in classes]
    found = [next((i for i, c in enumerate(norm) if c in names), None) for names in ISIC2017_NAMES.values()]
    return (found[0], found[1]) if found[0] is not None and found[1] is not None else None


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> NDArray[np.int64]:
    """(K, K) counts: row = true class, column = decided class."""
    truth, pred = _class_labels(y_true, n_classes, "y_true"), _class_labels(y_pred, n_classes, "y_pred")
    if truth.shape != pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    return np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _count_scores(matrix: NDArray[Any]) -> dict[str, NDArray[np.float64]]:
    """Accuracy, balanced accuracy, per-class sensitivity and specificity from (..., K, K) confusion counts."""
    m = np.asarray(matrix, dtype=np.float64)
    diag = np.diagonal(m, axis1=-2, axis2=-1)
    rows, cols = m.sum(axis=-1), m.sum(axis=-2)
    total = rows.sum(axis=-1, keepdims=True)
    sens = _ratio(diag, rows)
    spec = _ratio(total - rows - cols + diag, total - rows)
    present = rows > 0
    with np.errstate(invalid="ignore"):
        balanced = np.where(present, np.nan_to_num(sens), 0.0).sum(axis=-1) / present.sum(axis=-1)
    return {"accuracy": _ratio(diag.sum(axis=-1), total[..., 0]), "balanced_accuracy": balanced,
            "sensitivity": sens, "specificity": spec}


def multiclass_metrics(y_true: ArrayLike, probs: ArrayLike, y_pred: ArrayLike, classes: Sequence[str], *,
                       malignant: Sequence[int] | None = None, threshold: float | None = None) -> dict[str, Any]:
    """Every K-class metric of the probabilities ``probs`` (N, K) and the decided labels ``y_pred``, JSON-ready
    (NaN where undefined). ``malignant`` (class indices) with ``threshold``: also the malignancy group's binary
    metrics under ``"malignant"``."""
    k = len(classes)
    truth = _class_labels(y_true, k, "y_true")
    p = _probabilities(probs, truth.size)
    if p.shape[1] != k:
        raise ValueError(f"probabilities have {p.shape[1]} columns for {k} classes")
    matrix = confusion_matrix(truth, y_pred, k)
    counts = _count_scores(matrix)
    aucs = np.array([roc_auc((truth == c).astype(np.int64), p[:, c]) for c in range(k)])
    rows = matrix.sum(axis=1, keepdims=True)
    out: dict[str, Any] = {
        "n": int(truth.size),
        "classes": list(classes),
        "accuracy": float(counts["accuracy"]),
        "balanced_accuracy": float(counts["balanced_accuracy"]),
        "macro_auc": float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan"),
        "per_class": {name: {"n": int(rows[c, 0]), "auc": float(aucs[c]),
                             "sensitivity": float(counts["sensitivity"][c]),
                             "specificity": float(counts["specificity"][c])} for c, name in enumerate(classes)},
        "confusion": matrix.tolist(),
        "confusion_normalised": [[float(v) for v in row] if n else None
                                 for row, n in zip(_ratio(matrix, rows), rows[:, 0], strict=True)],
    }
    isic = isic2017_indices(classes)
    if isic is not None:
        mel, sk = float(aucs[isic[0]]), float(aucs[isic[1]])
        out["isic2017"] = {"melanoma_auc": mel, "seborrheic_keratosis_auc": sk, "mean_auc": (mel + sk) / 2}
    if malignant is not None:
        if threshold is None:
            raise ValueError("the malignancy group's metrics need its threshold")
        out["malignant"] = binary_metrics(malignant_truth(truth, malignant), malignant_probability(p, malignant),
                                          threshold)
    return out


def _resampled_confusion(truth: NDArray[np.int64], pred: NDArray[np.int64], idx: NDArray[np.intp],
                         k: int) -> NDArray[np.int64]:
    """(rows, K, K) confusion counts, one matrix per row of the index matrix ``idx``."""
    rows = idx.shape[0]
    flat = (np.arange(rows)[:, None] * k * k + truth[idx] * k + pred[idx]).ravel()
    return np.bincount(flat, minlength=rows * k * k).reshape(rows, k, k)


def _resampled(truth: NDArray[np.int64], pred: NDArray[np.int64], p: NDArray[np.float64],
               codes: list[tuple[NDArray[np.intp], int]], idx: NDArray[np.intp],
               isic: tuple[int, int] | None) -> dict[str, NDArray[np.float64]]:
    """Every bootstrapped scalar for each row of the index matrix ``idx``: (rows,) or (rows, K) arrays."""
    rows, k = idx.shape[0], p.shape[1]
    yt = truth[idx]
    out = _count_scores(_resampled_confusion(truth, pred, idx, k))
    aucs = np.full((rows, k), np.nan)
    for c, (code, n_unique) in enumerate(codes):
        if n_unique == 0:
            continue
        cells = (code[idx] + (np.arange(rows) * n_unique)[:, None]).ravel()
        total = np.bincount(cells, minlength=rows * n_unique).reshape(rows, n_unique)
        pos = np.bincount(cells, weights=(yt == c).ravel(), minlength=rows * n_unique).reshape(rows, n_unique)
        aucs[:, c] = _rank_metrics(pos, total - pos, PAUC_MIN_TPR)["roc_auc"]
    out["auc"] = aucs
    defined = np.isfinite(aucs).any(axis=1)
    out["macro_auc"] = np.where(defined, np.nansum(aucs, axis=1) / np.maximum(np.isfinite(aucs).sum(axis=1), 1),
                                np.nan)
    if isic is not None:
        out["melanoma_auc"], out["seborrheic_keratosis_auc"] = aucs[:, isic[0]], aucs[:, isic[1]]
        out["mean_auc"] = (aucs[:, isic[0]] + aucs[:, isic[1]]) / 2
    return out


def _interval(values: NDArray[np.float64], confidence: float) -> list[float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return [float("nan"), float("nan")]
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def multiclass_bootstrap_ci(y_true: ArrayLike, probs: ArrayLike, y_pred: ArrayLike, classes: Sequence[str], *,
                            n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                            malignant: Sequence[int] | None = None, threshold: float | None = None
                            ) -> dict[str, Any]:
    """Percentile intervals ``[low, high]`` shaped like :func:`multiclass_metrics`'s values: ``accuracy``,
    ``balanced_accuracy``, ``macro_auc``, ``per_class`` {class: {auc, sensitivity, specificity}}, ``isic2017``
    where present and, with ``malignant`` and ``threshold``, the binary intervals (:func:`metrics.bootstrap_ci`)
    of the malignancy score. Deterministic for a given ``seed``."""
    k = len(classes)
    truth, pred = _class_labels(y_true, k, "y_true"), _class_labels(y_pred, k, "y_pred")
    p = _probabilities(probs, truth.size)
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    codes = [_score_codes(p[:, c]) if truth.size else (np.empty(0, np.intp), 0) for c in range(k)]
    isic = isic2017_indices(classes)
    strata = [np.flatnonzero(truth == c) for c in range(k)]
    chunks = [_resampled(truth, pred, p, codes, idx, isic)
              for idx in strata_index_chunks(strata, int(n_resamples), seed)]

    def joined(name: str) -> NDArray[np.float64]:
        return np.concatenate([chunk[name] for chunk in chunks])

    out: dict[str, Any] = {name: _interval(joined(name), confidence)
                           for name in ("accuracy", "balanced_accuracy", "macro_auc")}
    columns = {"auc": joined("auc"), "sensitivity": joined("sensitivity"), "specificity": joined("specificity")}
    out["per_class"] = {name: {m: _interval(columns[m][:, c], confidence) for m in PER_CLASS}
                        for c, name in enumerate(classes)}
    if isic is not None:
        out["isic2017"] = {name: _interval(joined(name), confidence)
                           for name in ("melanoma_auc", "seborrheic_keratosis_auc", "mean_auc")}
    if malignant is not None:
        if threshold is None:
            raise ValueError("the malignancy group's intervals need its threshold")
        ci = bootstrap_ci(malignant_truth(truth, malignant), malignant_probability(p, malignant), threshold,
                          n_resamples=n_resamples, confidence=confidence, seed=seed)
        out["malignant"] = {name: [lo, hi] for name, (lo, hi) in ci.items()}
    return out


def paired_balanced_accuracy_difference(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, n_classes: int, *,
                                         resamples: int, seed: int = 0, confidence: float = 0.95
                                         ) -> tuple[float, list[float] | None]:
    """Balanced accuracy of decisions ``a`` minus that of ``b`` on the same images, with a percentile interval of
    the class-stratified bootstrap (the same resamples for both; None with ``resamples`` 0)."""
    truth = _class_labels(y_true, n_classes, "y_true")
    a, b = _class_labels(pred_a, n_classes, "pred_a"), _class_labels(pred_b, n_classes, "pred_b")
    whole = np.arange(truth.size)[None, :]

    def balanced(pred: NDArray[np.int64], idx: NDArray[np.intp]) -> NDArray[np.float64]:
        return _count_scores(_resampled_confusion(truth, pred, idx, n_classes))["balanced_accuracy"]

    diff = float(balanced(a, whole)[0] - balanced(b, whole)[0])
    if not resamples or not truth.size:
        return diff, None
    strata = [np.flatnonzero(truth == c) for c in range(n_classes)]
    deltas = np.concatenate([balanced(a, idx) - balanced(b, idx)
                             for idx in strata_index_chunks(strata, int(resamples), seed)])
    return diff, _interval(deltas, confidence)


def evaluate_multiclass(y_true: ArrayLike, probs: ArrayLike, y_pred: ArrayLike, classes: Sequence[str], *,
                        malignant: Sequence[int] | None = None, threshold: float | None = None,
                        bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """``{"metrics": multiclass_metrics(...), "ci": multiclass_bootstrap_ci(...) or None}`` (None when
    ``bootstrap`` is 0), as :func:`metrics.evaluate_predictions` for two classes."""
    metrics = multiclass_metrics(y_true, probs, y_pred, classes, malignant=malignant, threshold=threshold)
    ci = multiclass_bootstrap_ci(y_true, probs, y_pred, classes, n_resamples=bootstrap, confidence=confidence,
                                 seed=seed, malignant=malignant, threshold=threshold) if bootstrap else None
    return {"metrics": metrics, "ci": ci}

