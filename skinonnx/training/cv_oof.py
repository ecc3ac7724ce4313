"""Out-of-fold scoring: each fold's predictions on the images it never trained on (``fold-<k>/oof.csv``), pooled
into temperature, threshold and metrics (``oof.csv`` and cv.json's ``oof`` entry)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_json, write_text
from ..data.layouts import LabeledData, Sample
from ..evaluation.class_bias import biased_decision, log_probabilities
from ..evaluation.metrics import binary_metrics, bootstrap_ci
from ..evaluation.multiclass_metrics import evaluate_multiclass, malignant_probability, malignant_truth
from ..softmax import softmax
from .cv_record import CV_FILE, OOF_FILE, CVError, check_complete, fold_dir, now

OOF_BOOTSTRAP = 1000


def fold_oof_text(samples: list[Sample], logits: np.ndarray, k: int, data: LabeledData) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "group", "fold", *(f"logit_{c}" for c in data.classes)])
    for s, z in zip(samples, logits, strict=True):
        writer.writerow([s.path.resolve().relative_to(data.root.resolve()).as_posix()
                         if s.path.resolve().is_relative_to(data.root.resolve()) else str(s.path),
                         data.classes[s.label], s.group or "", k, *(repr(float(v)) for v in z)])
    return buf.getvalue()



def read_oof(run_dir: Path, k: int, classes: list[str]) -> list[dict[str, Any]]:
    path = fold_dir(run_dir, k) / OOF_FILE
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [{"path": r["path"], "label": r["label"], "group": r["group"], "fold": int(r["fold"]),
                 "logits": [float(r[f"logit_{c}"]) for c in classes]} for r in rows]
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise CVError(f"{path}: cannot read the fold's out-of-fold predictions ({exc})") from None



def combine(run_dir: Path, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Pool the folds' OOF predictions (:func:`score_oof`) and write ``oof.csv`` and cv.json's ``oof`` entry,
    which export puts into the ensemble's metadata."""
    cv, summary, text = score_oof(run_dir)
    write_text(run_dir / OOF_FILE, text)
    write_json(run_dir / CV_FILE, {**cv, "oof": summary, "combined_at": now()})
    cal, sd = summary["calibration"], summary["fold_val_auc_sd"]
    if cal["refused"]:
        echo(f"calibration refused: the temperature fitted on the out-of-fold predictions "
             f"({cal['fitted_temperature']:.3f}) {cal['refused']}; keeping T = 1 (uncalibrated)")
    echo(f"cross-validation '{run_dir.name}' complete: fold val AUC {summary['fold_val_auc_mean']:.4f}"
         + (f" ± {sd:.4f}" if sd is not None else "") + f"; OOF AUC {summary['roc_auc']:.4f} "
         f"[{summary['roc_auc_ci'][0]:.4f}, {summary['roc_auc_ci'][1]:.4f}] on {summary['n']} images; OOF temperature "
         f"{summary['temperature']:.3f}, threshold {summary['threshold']:.4f} ({summary['threshold_policy']}); "
         f"{run_dir / OOF_FILE}")
    if "multiclass" in summary:
        m, ci, bias = summary["multiclass"]["metrics"], summary["multiclass"]["ci"], summary["class_bias"]
        tuned = (f"; class bias tuned on OOF: balanced accuracy {bias['balanced_accuracy_before']:.4f} (argmax) -> "
                 f"{bias['balanced_accuracy_after']:.4f}" if bias["tuned_on"] != "none" else "")
        echo(f"OOF diagnosis: balanced accuracy {m['balanced_accuracy']:.4f} [{ci['balanced_accuracy'][0]:.4f}, "
             f"{ci['balanced_accuracy'][1]:.4f}], macro AUC {m['macro_auc']:.4f}{tuned}")
    return summary


def score_oof(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """cv.json, the OOF summary (temperature and threshold fitted on the pooled out-of-fold logits, under the
    calibration guard of single runs) and the text of ``oof.csv``; writes nothing."""
    from .finalize import calibrate_and_choose

    cv, done = check_complete(run_dir)
    classes = list(cv["classes"])
    group = [int(i) for i in cv.get("malignant") or [cv["positive_index"]]]
    rows = [row for st in done for row in read_oof(run_dir, int(st["fold"]), classes)]
    rows.sort(key=lambda r: r["path"])
    logits = np.array([r["logits"] for r in rows], np.float64)
    labels = np.array([classes.index(r["label"]) for r in rows])
    config = cv["config"]
    extra = calibrate_and_choose(logits, labels, group, config["threshold_policy"], bool(config["calibrate"]),
                                 "oof" if config.get("class_bias") == "oof" else "none")
    temperature, decision = extra["calibration"]["temperature"], extra["decision"]
    prob = malignant_probability(softmax(logits, temperature), group)
    raw = malignant_probability(softmax(logits), group)
    y = malignant_truth(labels, group)
    metrics = binary_metrics(y, prob, decision["threshold"])
    ci = bootstrap_ci(y, prob, decision["threshold"], n_resamples=OOF_BOOTSTRAP, seed=0)
    fold_aucs = [float(st["val_auc"]) for st in done]
    finite = [a for a in fold_aucs if math.isfinite(a)]
    summary = {
        "n": len(rows), "n_positive": int(y.sum()),
        "roc_auc": metrics["roc_auc"], "roc_auc_ci": list(ci["roc_auc"]),
        "sensitivity": metrics["sensitivity"], "specificity": metrics["specificity"],
        "balanced_accuracy": metrics["balanced_accuracy"],
        "threshold": decision["threshold"], "threshold_policy": decision["policy"], "threshold_note": decision["note"],
        "temperature": temperature, "calibration": {**extra["calibration"], "fitted_on": "out-of-fold"},
        "fold_val_auc": fold_aucs, "fold_val_auc_mean": float(np.mean(finite)) if finite else None,
        "fold_val_auc_sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
        "fold_best_epoch": [int(st["best_epoch"]) for st in done],
        "bootstrap": {"resamples": OOF_BOOTSTRAP, "seed": 0, "confidence": 0.95},
    }
    if len(classes) > 2:  # the diagnosis: K-class metrics of the (class-biased) decision, and the offsets
        log_p = log_probabilities(logits, temperature)
        offsets = extra["class_bias"]["offsets"]
        summary["malignant"] = group
        summary["class_bias"] = extra["class_bias"]
        summary["multiclass"] = evaluate_multiclass(labels, np.exp(log_p), biased_decision(log_p, offsets), classes,
                                                    bootstrap=OOF_BOOTSTRAP, seed=0)
    return cv, summary, _oof_text(rows, classes, prob, raw, softmax(logits, temperature))


def _oof_text(rows: list[dict[str, Any]], classes: list[str], prob: np.ndarray, raw: np.ndarray,
              calibrated: np.ndarray) -> str:
    """oof.csv: path, label, group, fold, the logits, ``probability`` (the malignancy group's, calibrated) and
    ``probability_uncalibrated``; more than two classes also ``p_<class>``, every class's calibrated probability
    (what `audit` gives cleanlab). Two classes: the columns as ever."""
    per_class = len(classes) > 2
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "group", "fold", *(f"logit_{c}" for c in classes), "probability",
                     "probability_uncalibrated", *(f"p_{c}" for c in classes if per_class)])
    for r, p, q, ps in zip(rows, prob, raw, calibrated, strict=True):
        writer.writerow([r["path"], r["label"], r["group"], r["fold"], *(repr(v) for v in r["logits"]),
                         f"{p:.6f}", f"{q:.6f}", *(f"{v:.6f}" for v in ps if per_class)])
    return buf.getvalue()
