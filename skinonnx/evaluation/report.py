"""`test`: evaluate a split through ONNX Runtime only (no torch).

Metrics with stratified-bootstrap confidence intervals at the model's operating point and at
0.5, calibration before/after temperature scaling, per-image CSV, a versioned summary.json
(docs/REPORTS.md), plots and a model card. :func:`evaluate_predictions` and
:func:`calibration_report` are the library entry points for code that has its own predictions.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import __version__
from ..atomic import write_text
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import LabeledData, discover
from ..data.preprocessing import Preprocessing
from ..deploy.cam_overlays import relative_to_threshold
from ..deploy.contract import SCHEMA_KEY
from ..deploy.runtime import OnnxClassifier
from ..errors import DataError, SkinOnnxError
from ..softmax import softmax
from .calibration import brier_score, expected_calibration_error, reliability_curve
from .cv_report import cv_section
from .cv_report import terminal_lines as cv_terminal_lines
from .metrics import METRIC_NAMES, binary_metrics, bootstrap_ci, classification_report_text
from .model_card import render_model_card
from .ood_summary import ood_section
from .ood_summary import terminal_lines as ood_terminal_lines
from .provenance import (
    data_source_line,
    dumps_strict,
    find_run_dir,
    read_history,
    read_parity_record,
    read_training_config,
    sha256_of,
)

SUMMARY_SCHEMA = "skinonnx-evaluation-summary"
SUMMARY_SCHEMA_VERSION = 1
REFERENCE_THRESHOLD = 0.5
CALIBRATION_BINS = 10
RANK_METRICS = ("roc_auc", "average_precision", "pauc_80", "auc_sens_80")  # threshold-free


# --------------------------------------------------------------------------- library functions


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


# --------------------------------------------------------------------------- running the model


@dataclass
class SplitPredictions:
    """One split through the model: labels (1 = positive), calibrated and raw positive probabilities."""

    split: str
    rows: list[dict[str, Any]]
    y_true: np.ndarray
    y_prob: np.ndarray
    y_prob_raw: np.ndarray | None  # softmax(logits) with T = 1; None when the graph has no logits
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cams: list[np.ndarray] | None = None  # per row: the graph's cam, shifted to the threshold (for display)


def predict_split(classifier: OnnxClassifier, data: LabeledData, split: str, threshold: float, *,
                  batch_size: int = 16, progress: bool = True,
                  max_pixels: int = DEFAULT_MAX_PIXELS, with_cam: bool = False) -> SplitPredictions:
    contract = classifier.contract
    to_model = {i: contract.classes.index(c) for i, c in enumerate(data.classes)}
    samples = data.split(split)
    pos = contract.positive_index
    rows, raw, skipped, cams = [], [], [], []
    with_cam = with_cam and classifier.has_cam
    predictions = classifier.predict_files([s.path for s in samples], batch_size=batch_size, progress=progress,
                                           with_logits=True, max_pixels=max_pixels, with_cam=with_cam)
    for sample, pred in zip(samples, predictions, strict=True):
        if not pred.ok:
            skipped.append((pred.path, str(pred.error)))
            continue
        label = to_model[sample.label]
        prob = float(pred.probabilities[pos])
        predicted = pos if prob >= threshold else 1 - pos
        row = {"path": pred.path, "label": contract.classes[label], "probability": prob,
               "prediction": contract.classes[predicted], "correct": int(predicted == label)}
        if pred.logits is not None:
            raw.append(float(softmax(pred.logits)[pos]))
            row["probability_uncalibrated"] = raw[-1]
        if pred.ood_score is not None:  # the headline metrics stay on all images; summary's "ood" adds the rest
            row["ood_score"], row["in_distribution"] = pred.ood_score, pred.in_distribution
        rows.append(row)
        if pred.cam is not None and pred.logits is not None:  # shown relative to the threshold used
            cams.append(relative_to_threshold(pred.cam, float(pred.logits[pos] - pred.logits[1 - pos]), threshold,
                                              contract.temperature))
    if not rows:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise SkinOnnxError(f"no readable images in the {split} split ({len(skipped)} skipped{first})")
    y_true = np.array([int(r["label"] == contract.positive_class) for r in rows])
    y_prob = np.array([r["probability"] for r in rows])
    y_raw = np.array(raw) if len(raw) == len(rows) else None
    return SplitPredictions(split, rows, y_true, y_prob, y_raw, skipped,
                            cams if with_cam and len(cams) == len(rows) else None)


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    threshold: float
    threshold_source: str
    provider: str
    out_dir: Path
    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report_text: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    evaluated: SplitPredictions | None = None
    validation: SplitPredictions | None = None
    history: list[dict[str, float]] | None = None
    files: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None  # for the HTML report's case images
    max_pixels: int = DEFAULT_MAX_PIXELS


def evaluate_split(classifier: OnnxClassifier, data_root: str | os.PathLike[str], *, split: str = "test",
                   threshold: float | None = None, batch_size: int = 16, out_dir: str | os.PathLike[str],
                   progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, bootstrap: int = 1000,
                   ci_seed: int = 0, confidence: float = 0.95,
                   use_val: bool = True, run_dir: str | os.PathLike[str] | None = None, plots: bool = True,
                   model_card: bool = True, html: bool = True) -> EvalResult:
    """Evaluate ``split`` and write the report folder ``out_dir`` (see docs/REPORTS.md).

    With ``use_val`` the validation split (where the threshold and temperature were chosen) is
    also run, for its calibration before/after and its figures at the operating point.
    """
    contract = classifier.contract
    data = discover(data_root, write_split_file=False)  # classes are compared with the model's just below
    if set(data.classes) != set(contract.classes):
        raise DataError(f"the data's classes {list(data.classes)} differ from the model's {list(contract.classes)}")
    used = contract.threshold if threshold is None else threshold
    source = f"model metadata ({contract.threshold_policy})" if threshold is None else "--threshold"
    evaluated = predict_split(classifier, data, split, used, batch_size=batch_size, progress=progress,
                              max_pixels=max_pixels, with_cam=html)
    validation = None
    if use_val and split == "val":
        validation = evaluated
    elif use_val and data.splits.get("val"):
        validation = predict_split(classifier, data, "val", used, batch_size=batch_size, progress=progress,
                                   max_pixels=max_pixels)

    at_op = evaluate_predictions(evaluated.y_true, evaluated.y_prob, used, bootstrap=bootstrap, seed=ci_seed,
                                 confidence=confidence)
    at_ref = evaluate_predictions(evaluated.y_true, evaluated.y_prob, REFERENCE_THRESHOLD, bootstrap=bootstrap,
                                  seed=ci_seed, confidence=confidence)
    index = {name: i for i, name in enumerate(contract.classes)}
    report = classification_report_text([index[r["label"]] for r in evaluated.rows],
                                        [index[r["prediction"]] for r in evaluated.rows], list(contract.classes))
    found_run = find_run_dir(classifier.metadata, run_dir)
    history = read_history(found_run)
    result = EvalResult(at_op["metrics"], used, source, classifier.provider, Path(out_dir), evaluated.rows,
                        evaluated.skipped, report, evaluated=evaluated, validation=validation, history=history,
                        preprocessing=contract.preprocessing, max_pixels=max_pixels)
    result.summary = build_summary(classifier, data, evaluated, validation, at_op, at_ref, source,
                                   bootstrap=bootstrap, ci_seed=ci_seed, confidence=confidence, run_dir=found_run,
                                   history=history)
    write_report(result, plots=plots, model_card=model_card, html=html)
    return result


# --------------------------------------------------------------------------- summary.json


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
        "ood": ood_section(evaluated.rows, evaluated.y_true, evaluated.y_prob, at_op["threshold"],
                           classifier.ood_threshold, meta, bootstrap=bootstrap, seed=ci_seed, confidence=confidence),
        "skipped": [{"path": p, "problem": e} for p, e in evaluated.skipped],
        "files": [],
    }


# --------------------------------------------------------------------------- writing the report


def write_report(result: EvalResult, *, plots: bool = True, model_card: bool = True, html: bool = True) -> None:
    """predictions.csv, classification_report.txt, PNGs, MODEL_CARD.md, report.html and last summary.json."""
    out = result.out_dir
    files = ["predictions.csv", "classification_report.txt"]
    write_predictions_csv(out / "predictions.csv", result.rows)
    write_text(out / "classification_report.txt", result.report_text)
    if plots:
        from .plots import write_plots  # matplotlib loads only when figures are wanted

        assert result.evaluated is not None
        files += write_plots(result.summary, result.evaluated.y_true, result.evaluated.y_prob, out,
                             history=result.history)
        files += _write_cv_plot(result)
    if model_card:
        files.append("MODEL_CARD.md")
        result.summary["files"] = [*files, "summary.json"]
        write_text(out / "MODEL_CARD.md", render_model_card(result.summary))
    if html:
        from .html_report import HTML_NAME, write_html_report

        assert result.evaluated is not None
        result.summary["files"] = [*files, HTML_NAME, "summary.json"]  # what the page lists as figures
        files += write_html_report(out, result.summary, result.rows, result.evaluated.cams, result.preprocessing,
                                   max_pixels=result.max_pixels)
    result.summary["files"] = [*files, "summary.json"]
    result.files = result.summary["files"]
    write_text(out / "summary.json", summary_json(result.summary))


def _write_cv_plot(result: EvalResult) -> list[str]:
    """cv_roc_curves.png for a fold ensemble whose run folder (oof.csv) is at hand."""
    from ..atomic import write_bytes
    from .cv_report import FIGURE, plot_cv_roc, read_oof_csv

    cv = result.summary.get("cross_validation")
    if not cv or not cv.get("oof_file") or result.evaluated is None:
        return []
    folds = read_oof_csv(Path(cv["oof_file"]).parent, result.summary["positive_class"])
    if not folds:
        return []
    evaluated = (result.evaluated.y_true, result.evaluated.y_prob)
    write_bytes(result.out_dir / FIGURE, plot_cv_roc(folds, evaluated, result.evaluated.split))
    return [FIGURE]


def summary_json(summary: dict[str, Any]) -> str:
    """The summary as strict JSON (undefined metrics are null, never NaN)."""
    return dumps_strict(summary)


def write_predictions_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


# --------------------------------------------------------------------------- terminal table


def _num(value: Any) -> str:
    return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _interval(ci: dict[str, Any] | None, name: str) -> str:
    if ci is None:
        return ""
    lo, hi = ci[name]
    return f"[{_num(lo)}, {_num(hi)}]"


def format_metrics(result: EvalResult) -> str:
    """Every metric with its 95 % CI, at the operating point and at 0.5; confusion matrix; calibration."""
    s = result.summary
    m, ci = s["metrics"], s["ci"]
    ref = s["reference"]
    c = m["confusion"]
    boot = s["bootstrap"]
    pct = f"{boot['confidence']:.0%} CI" if boot else ""
    lines = [f"evaluated {m['n']} images of the {s['data']['split']} split ({m['n_positive']} "
             f"{s['positive_class']}) with {result.provider}",
             f"operating point: threshold {result.threshold:.4f} from {result.threshold_source}"]
    if boot:
        lines.append(f"{pct}: {boot['method']}, {boot['resamples']} resamples, seed {boot['seed']}")
    width = 18 if boot else 0
    lines.append(f"  {'metric':<20} {'@' + format(result.threshold, '.4f'):>8} {pct:<{width}}  "
                 f"{'@' + format(ref['threshold'], '.4f'):>8} {pct}".rstrip())
    for name in METRIC_NAMES:
        label = name + (" *" if name in RANK_METRICS else "")
        lines.append(f"  {label:<20} {_num(m[name]):>8} {_interval(ci, name):<{width}}  "
                     f"{_num(ref['metrics'][name]):>8} {_interval(ref['ci'], name)}".rstrip())
    lines += ["  * threshold-free (same at both thresholds); pauc_80 = ISIC 2024 partial ROC AUC above 80 % "
              "sensitivity (raw, max 0.2); auc_sens_80 = ISIC 2018-2019 scorer's \"AUC, Sens > 80%\" (max 1)",
              f"  confusion matrix at {result.threshold:.4f} (rows = truth, cols = prediction; "
              f"{next(c for c in s['classes'] if c != s['positive_class'])}, {s['positive_class']}):",
              f"    [[{c['tn']:>4} {c['fp']:>4}]", f"     [{c['fn']:>4} {c['tp']:>4}]]"]
    lines += _calibration_lines(s["calibration"])
    lines += cv_terminal_lines(s.get("cross_validation"))
    lines += ood_terminal_lines(s.get("ood"), m)
    return "\n".join(lines)


def _calibration_lines(cal: dict[str, Any]) -> list[str]:
    lines = [f"  calibration (temperature {cal['temperature']:.4f}; ECE over {cal['n_bins']} bins, "
             "before -> after temperature scaling):"]
    for key in ("validation", "evaluated"):
        block = cal.get(key)
        if block is None or (key == "validation" and block["split"] == cal["evaluated"]["split"]):
            continue
        if block["ece_before"] is None:
            lines.append(f"    {block['split']:<5} ECE {_num(block['ece_after'])}  Brier {_num(block['brier_after'])}"
                         " (no logits output: uncalibrated values unavailable)")
        else:
            lines.append(f"    {block['split']:<5} ECE {_num(block['ece_before'])} -> {_num(block['ece_after'])}  "
                         f"Brier {_num(block['brier_before'])} -> {_num(block['brier_after'])}")
    return lines
