"""`test`: evaluate a split through ONNX Runtime only (no torch) into summary.json (schema in docs/REPORTS.md).

Beside it: :mod:`.model_run` runs the model over a split, :mod:`.report_files` writes the folder and
:mod:`.terminal` the table; the library functions are :func:`.metrics.evaluate_predictions` and
:func:`.calibration.calibration_report`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from ..data.exclusions import apply_exclusions, apply_recorded, exclusion_reason, read_exclude_list
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import LabeledData, discover
from ..deploy.contract import SCHEMA_KEY
from ..deploy.runtime import OnnxClassifier
from ..errors import DataError, SkinOnnxError
from ..evaluation.calibration import CALIBRATION_BINS, calibration_report
from ..evaluation.metrics import binary_metrics, classification_report_text, evaluate_predictions
from ..evaluation.multiclass_metrics import MALIGNANT_GROUP_NAME
from ..evaluation.verdict import verdict_of
from . import provenance, safety
from .cv_report import cv_section, fold_members, trained_on
from .model_run import EvalResult, SplitPredictions, predict_split
from .multiclass_report import multiclass_section, subgroup_scorer
from .ood_summary import ood_section
from .report_files import write_report

SUMMARY_SCHEMA = "skinonnx-evaluation-summary"
SUMMARY_SCHEMA_VERSION = 1
REFERENCE_THRESHOLD = 0.5


def evaluate_split(classifier: OnnxClassifier, data_root: str | os.PathLike[str], *, split: str = "test",
                   threshold: float | None = None, batch_size: int = 16, out_dir: str | os.PathLike[str],
                   progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS, bootstrap: int = 1000,
                   ci_seed: int = 0, confidence: float = 0.95,
                   use_val: bool = True, run_dir: str | os.PathLike[str] | None = None,
                   runs_dir: str | os.PathLike[str] | None = None, plots: bool = True,
                   model_card: bool = True, html: bool = True, echo: Callable[[str], None] = print,
                   by: Sequence[str] = (), attributes: str | os.PathLike[str] | None = None,
                   exclude_list: str | os.PathLike[str] | None = None) -> EvalResult:
    """Evaluate ``split`` and write the report folder ``out_dir`` (see docs/REPORTS.md).

    With ``use_val`` the validation split (where the threshold and temperature were chosen) is
    also run, for its calibration before/after and its figures at the operating point. ``by``: subgroup
    columns (of the index CSV, of the ``attributes`` CSV, or ``ita``), see reporting/safety.py. The images the
    model's training run excluded are left out (data/exclusions.py), and those of ``exclude_list`` too.
    """
    contract = classifier.contract
    data = discover(data_root, write_split_file=False)  # classes are compared with the model's just below
    data = apply_recorded(data, provenance.read_training_config(provenance.find_run_dir(classifier.metadata, run_dir),
                                                                classifier.metadata))
    if exclude_list is not None:
        data = apply_exclusions(data, read_exclude_list(exclude_list), str(exclude_list),
                                reason=exclusion_reason(exclude_list))
    for note in data.notes:
        echo(note)
    if set(data.classes) != set(contract.classes):
        raise DataError(f"the data's classes {list(data.classes)} differ from the model's {list(contract.classes)}")
    groups = safety.attribute_table_for(data, split, by, attributes)  # an unknown column fails before the model runs
    used = contract.threshold if threshold is None else threshold
    source = f"model metadata ({contract.threshold_policy})" if threshold is None else "--threshold"
    evaluated = predict_split(classifier, data, split, used, batch_size=batch_size, progress=progress,
                              max_pixels=max_pixels, with_cam=html)
    validation = None
    val_trained_on = trained_on(classifier.metadata, data.root, "val")
    if use_val and val_trained_on:
        echo(f"validation split not run: {val_trained_on} (its calibration and operating point would be in-sample)")
    elif use_val and split == "val":
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
    found_run = provenance.find_run_dir(classifier.metadata, run_dir, runs_dir)
    history = provenance.read_history(found_run)
    result = EvalResult(at_op["metrics"], used, source, classifier.provider, Path(out_dir), evaluated.rows,
                        evaluated.skipped, report, evaluated=evaluated, validation=validation, history=history,
                        preprocessing=contract.preprocessing, max_pixels=max_pixels)
    result.summary = build_summary(classifier, data, evaluated, validation, at_op, at_ref, source,
                                   bootstrap=bootstrap, ci_seed=ci_seed, confidence=confidence, run_dir=found_run,
                                   history=history, val_trained_on=val_trained_on if use_val else None)
    per_group = None
    if contract.multiclass:  # the K-class block; the binary sections score the malignancy group
        result.summary["multiclass"] = multiclass_section(evaluated, contract.classes, contract.group,
                                                          bootstrap=bootstrap, seed=ci_seed, confidence=confidence)
        per_group = subgroup_scorer(evaluated, contract.classes, bootstrap=bootstrap, seed=ci_seed,
                                    confidence=confidence) if by else None
    result.summary.update(safety.safety_summary(
        evaluated.y_true, evaluated.y_prob, used, evaluated.rows, ood_threshold=getattr(contract, "ood_threshold",
                                                                                        None),
        by=by, attributes=groups, bootstrap=bootstrap, seed=ci_seed, confidence=confidence, max_pixels=max_pixels,
        progress=progress, per_group=per_group))
    write_report(result, plots=plots, model_card=model_card, html=html)
    return result


def _metadata_json(meta: dict[str, str], key: str) -> dict[str, Any] | None:
    try:
        value = json.loads(meta.get(key, ""))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _fitted_on(meta: dict[str, str], at_training: dict[str, Any] | None) -> str:
    """Where T and the threshold were fitted: as recorded, else out-of-fold for any fold ensemble (older exports
    record no ``fitted_on``), else the validation split."""
    recorded = (at_training or {}).get("fitted_on")
    return str(recorded) if recorded else "out-of-fold" if fold_members(meta) else "validation"


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
                  run_dir: Path | None, history: list[dict[str, float]] | None,
                  val_trained_on: str | None = None) -> dict[str, Any]:
    """The summary.json document, schema version 1 (every key is described in docs/REPORTS.md).

    ``val_trained_on``: why the validation split was not run (a fold ensemble trained on it), shown in its place.
    """
    contract = classifier.contract
    meta = classifier.metadata
    positive = MALIGNANT_GROUP_NAME if contract.multiclass else contract.positive_class
    at_training = _metadata_json(meta, "calibration")
    model_sha = provenance.sha256_of(classifier.path)
    config = provenance.read_training_config(run_dir, meta)
    training_metrics = _metadata_json(meta, "training_metrics") or {}
    val_block = None
    if validation is not None:
        val_block = {"split": validation.split, "threshold": at_op["threshold"],
                     "metrics": binary_metrics(validation.y_true, validation.y_prob, at_op["threshold"])}
    calibration: dict[str, Any] = {
        "temperature": contract.temperature, "n_bins": CALIBRATION_BINS,
        "at_training": at_training, "fitted_on": _fitted_on(meta, at_training),
        "validation_left_out": None if not val_trained_on else f"the validation split was {val_trained_on}",
        "validation": None if validation is None else {
            "split": validation.split,
            **calibration_report(validation.y_true, validation.y_prob, validation.y_prob_raw)},
        "evaluated": {"split": evaluated.split,
                      **calibration_report(evaluated.y_true, evaluated.y_prob, evaluated.y_prob_raw)},
    }
    summary = {
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
        "data": {"root": str(data.root), "layout": data.layout, "source": provenance.data_source_line(data.root),
                 "split": evaluated.split, "counts": data.counts(), "n_evaluated": len(evaluated.rows),
                 "n_positive": int(evaluated.y_true.sum()), "n_skipped": len(evaluated.skipped),
                 "trained_on": trained_on(meta, data.root, evaluated.split), "excluded": data.exclusions},
        "classes": list(contract.classes), "positive_class": positive,
        "threshold": at_op["threshold"], "threshold_source": source,
        "metrics": at_op["metrics"], "ci": at_op["ci"],
        "bootstrap": None if not bootstrap else {
            "method": "stratified percentile bootstrap (classes resampled separately, threshold fixed)",
            "resamples": bootstrap, "confidence": confidence, "seed": ci_seed},
        "reference": {"threshold": at_ref["threshold"], "metrics": at_ref["metrics"], "ci": at_ref["ci"]},
        "validation": val_block, "calibration": calibration,
        "training": {
            "run_dir": None if run_dir is None else str(run_dir), "config": config,
            "epochs_run": len(history) if history else None,
            "best_epoch": None if training_metrics.get("epoch") is None else int(training_metrics["epoch"]),
            "best_val_auc": training_metrics.get("val_auc"), "best_val_loss": training_metrics.get("val_loss"),
        },
        "parity": provenance.read_parity_record(classifier.path, model_sha),
        "cross_validation": cv_section(meta, run_dir, contract.positive_class, at_op["metrics"], at_op["ci"]),
        "ood": ood_section(evaluated.rows, evaluated.y_true, evaluated.y_prob, at_op["threshold"],
                           classifier.ood_threshold, meta, bootstrap=bootstrap, seed=ci_seed, confidence=confidence),
        "skipped": [{"path": p, "problem": e} for p, e in evaluated.skipped],
        "files": [],
    }
    if contract.multiclass:  # the file's K-class rule (the binary keys stay as they are for two classes)
        summary["model"].update({"malignant_classes": list(contract.malignant_classes),
                                 "class_bias": None if contract.class_bias is None else list(contract.class_bias)})
    summary["verdict"] = verdict_of(summary).as_dict()
    return summary
