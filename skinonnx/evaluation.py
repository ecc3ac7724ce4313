"""`test`: evaluate a split through ONNX Runtime only (no torch), write per-image CSV and summary."""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .atomic import write_json, write_text
from .data import discover
from .errors import DataError, SkinOnnxError
from .images import DEFAULT_MAX_PIXELS
from .metrics import binary_metrics, classification_report_text
from .runtime import OnnxClassifier


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


def evaluate_split(classifier: OnnxClassifier, data_root: str | os.PathLike[str], *, split: str = "test",
                   threshold: float | None = None, batch_size: int = 16, out_dir: str | os.PathLike[str],
                   progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> EvalResult:
    contract = classifier.contract
    data = discover(data_root, write_split_file=False)  # classes are compared with the model's just below
    if set(data.classes) != set(contract.classes):
        raise DataError(f"the data's classes {list(data.classes)} differ from the model's {list(contract.classes)}")
    to_model = {i: contract.classes.index(c) for i, c in enumerate(data.classes)}
    samples = data.split(split)
    pos = contract.positive_index
    used_threshold = contract.threshold if threshold is None else threshold
    source = f"model metadata ({contract.threshold_policy})" if threshold is None else "--threshold"
    rows, skipped = [], []
    predictions = classifier.predict_files([s.path for s in samples], batch_size=batch_size, progress=progress,
                                           max_pixels=max_pixels)
    for sample, pred in zip(samples, predictions, strict=True):
        if not pred.ok:
            skipped.append((pred.path, str(pred.error)))
            continue
        label = to_model[sample.label]
        prob = float(pred.probabilities[pos])
        predicted = pos if prob >= used_threshold else 1 - pos
        rows.append({"path": pred.path, "label": contract.classes[label], "probability": prob,
                     "prediction": contract.classes[predicted], "correct": int(predicted == label)})
    if not rows:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise SkinOnnxError(f"no readable images in the {split} split ({len(skipped)} skipped{first})")
    y_true = np.array([int(r["label"] == contract.positive_class) for r in rows])
    y_prob = np.array([r["probability"] for r in rows])
    metrics = binary_metrics(y_true, y_prob, used_threshold)
    index = {name: i for i, name in enumerate(contract.classes)}
    report = classification_report_text([index[r["label"]] for r in rows], [index[r["prediction"]] for r in rows],
                                        list(contract.classes))
    out = Path(out_dir)
    result = EvalResult(metrics, used_threshold, source, classifier.provider, out, rows, skipped, report)
    result.summary = {
        "skinonnx_version": __version__, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": str(classifier.path), "provider": classifier.provider, "data": str(data.root), "split": split,
        "classes": list(contract.classes), "positive_class": contract.positive_class,
        "threshold": used_threshold, "threshold_source": source, "metrics": metrics,
        "skipped": [{"path": p, "problem": e} for p, e in skipped],
    }
    write_predictions_csv(out / "predictions.csv", rows)
    write_json(out / "summary.json", result.summary)
    write_text(out / "classification_report.txt", report)
    return result


def write_predictions_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    write_text(path, buf.getvalue())


def format_metrics(result: EvalResult) -> str:
    m = result.metrics
    c = m["confusion"]
    names = ["accuracy", "balanced_accuracy", "sensitivity", "specificity", "ppv", "npv", "f1", "roc_auc",
             "average_precision", "pauc_80"]
    lines = [f"evaluated {m['n']} images ({m['n_positive']} positive) with {result.provider}; "
             f"threshold {result.threshold:.4f} from {result.threshold_source}"]
    lines += [f"  {name:<18} {m[name]:.4f}" for name in names if name in m]
    lines += ["  confusion matrix (rows = truth, cols = prediction; negative, positive):",
              f"    [[{c['tn']:>4} {c['fp']:>4}]", f"     [{c['fn']:>4} {c['tp']:>4}]]"]
    return "\n".join(lines)
