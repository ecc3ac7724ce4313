"""summary.json of `test` (schema in docs/REPORTS.md), and the library entry points for code with its own
predictions: :func:`evaluate_predictions` (metrics with stratified-bootstrap CIs) and :func:`calibration_report`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import __version__
from ..data.layouts import LabeledData
from ..deploy.contract import SCHEMA_KEY
from ..deploy.runtime import OnnxClassifier
from ..errors import SkinOnnxError
from .calibration import brier_score, expected_calibration_error, reliability_curve
from .cv_report import cv_section
from .metrics import binary_metrics, bootstrap_ci
from .model_run import SplitPredictions
from .provenance import data_source_line, dumps_strict, read_parity_record, read_training_config, sha256_of

SUMMARY_SCHEMA = "skinonnx-evaluation-summary"
SUMMARY_SCHEMA_VERSION = 1
REFERENCE_THRESHOLD = 0.5
CALIBRATION_BINS = 10
RANK_METRICS = ("roc_auc", "average_precision", "pauc_80", "auc_sens_80")  # threshold-free

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


def _metadata_json(meta: dict[str, str], key: str) -> dict[str, Any] | None:
    try:
        value = json.loads(meta.get(key, ""))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _opset(path: Path, meta: dict[str, str]) -> str | None:
    """The opset the file really declares (foreign files carry no skinonnx `opset` key)."""
    from ..deploy.info import read_header

    try:
        opset = read_header(path).opsets.get("ai.onnx")
    except SkinOnnxError:
        opset = None
    return str(opset) if opset else meta.get("opset")


def build_summary(classifier: OnnxClassifier, data: LabeledData, evaluated: SplitPredictions,
                  validation: SplitPredictions | None, at_op: dict[str, Any], at_ref: dict[str, Any],
                  source: str, *, bootstrap: int, ci_seed: int, confidence: float,
                  run_dir: Path | None, history: list[dict[str, float]] | None) -> dict[str, Any]:
    """The summary.json document, schema version 1 (every key is described in docs/REPORTS.md)."""
    contract = classifier.contract
    meta = classifier.metadata
    model_sha = sha256_of(classifier.path)
    config = read_training_config(run_dir, meta)
    training_metrics = _metadata_json(meta, "training_metrics") or {}
    val_block = None
    if validation is not None:
        val_block = {"split": validation.split, "threshold": at_op["threshold"],
                     "metrics": binary_metrics(validation.y_true, validation.y_prob, at_op["threshold"])}
    calibration: dict[str, Any] = {
        "temperature": contract.temperature, "n_bins": CALIBRATION_BINS,
        "at_training": _metadata_json(meta, "calibration"),
        "validation": None if validation is None else {
            "split": validation.split,
            **calibration_report(validation.y_true, validation.y_prob, validation.y_prob_raw)},
        "evaluated": {"split": evaluated.split,
                      **calibration_report(evaluated.y_true, evaluated.y_prob, evaluated.y_prob_raw)},
    }
    epochs_run = len(history) if history else None
    return {
        "schema": SUMMARY_SCHEMA, "schema_version": SUMMARY_SCHEMA_VERSION, "skinonnx_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": {
            "path": str(classifier.path), "sha256": model_sha, "architecture": meta.get("model_architecture"),
            "classes": list(contract.classes), "positive_class": contract.positive_class,
            "image_size": contract.preprocessing.image_size, "decision_threshold": contract.threshold,
            "threshold_policy": contract.threshold_policy, "temperature": contract.temperature,
            "source_checkpoint": meta.get("source_checkpoint"), "exported_at": meta.get("exported_at"),
            "opset": _opset(classifier.path, meta), "exported_by": meta.get("skinonnx_version"),
            "skinonnx_metadata": SCHEMA_KEY in meta,
        },
        "provider": classifier.provider,
        "data": {"root": str(data.root), "layout": data.layout, "source": data_source_line(data.root),
                 "split": evaluated.split, "counts": data.counts(), "n_evaluated": len(evaluated.rows),
                 "n_positive": int(evaluated.y_true.sum()), "n_skipped": len(evaluated.skipped)},
        "classes": list(contract.classes), "positive_class": contract.positive_class,
        "threshold": at_op["threshold"], "threshold_source": source,
        "metrics": at_op["metrics"], "ci": at_op["ci"],
        "bootstrap": None if not bootstrap else {
            "method": "stratified percentile bootstrap (classes resampled separately, threshold fixed)",
            "resamples": bootstrap, "confidence": confidence, "seed": ci_seed},
        "reference": {"threshold": at_ref["threshold"], "metrics": at_ref["metrics"], "ci": at_ref["ci"]},
        "validation": val_block,
        "calibration": calibration,
        "training": {
            "run_dir": None if run_dir is None else str(run_dir), "config": config, "epochs_run": epochs_run,
            "best_epoch": None if training_metrics.get("epoch") is None else int(training_metrics["epoch"]),
            "best_val_auc": training_metrics.get("val_auc"),
            "best_val_loss": training_metrics.get("val_loss"),
        },
        "parity": read_parity_record(classifier.path, model_sha),
        "cross_validation": cv_section(meta, run_dir, contract.positive_class, at_op["metrics"], at_op["ci"]),
        "skipped": [{"path": p, "problem": e} for p, e in evaluated.skipped],
        "files": [],
    }

def summary_json(summary: dict[str, Any]) -> str:
    """The summary as strict JSON (undefined metrics are null, never NaN)."""
    return dumps_strict(summary)
