"""The cross-validation section of a `test` report on a fold ensemble (no torch).

From the ONNX metadata (``ensemble``: per-fold validation AUCs, OOF metrics) and, when the run
folder is still there, its ``oof.csv`` (every pooled image's out-of-fold probability): per-fold
AUC, mean ± sd, the pooled OOF AUC with its bootstrap CI, and how the OOF-fitted threshold
transfers to the evaluated split. Plain data in, plain data (and one PNG) out.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..evaluation.metrics import fmt

OOF_FILE = "oof.csv"
FIGURE = "cv_roc_curves.png"


def read_oof_csv(run_dir: Path | None, positive_class: str) -> dict[int, tuple[np.ndarray, np.ndarray]] | None:
    """``{fold: (y, calibrated positive probability)}`` from a CV run's oof.csv, or None when absent/unreadable."""
    if run_dir is None:
        return None
    try:
        with open(run_dir / OOF_FILE, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        folds: dict[int, tuple[list[int], list[float]]] = {}
        for r in rows:
            y, p = folds.setdefault(int(r["fold"]), ([], []))
            y.append(int(r["label"] == positive_class))
            p.append(float(r["probability"]))
    except (OSError, KeyError, ValueError, csv.Error):
        return None
    return {k: (np.asarray(y), np.asarray(p)) for k, (y, p) in sorted(folds.items())} or None


def _ensemble(meta: Mapping[str, str]) -> dict[str, Any] | None:
    """The ONNX metadata ``ensemble`` record, or None for a single model (or an unreadable record)."""
    try:
        ensemble = json.loads(meta.get("ensemble", ""))
    except ValueError:
        return None
    return ensemble if isinstance(ensemble, dict) else None


def fold_members(meta: Mapping[str, str]) -> int | None:
    """K for a fold ensemble, None for a single model."""
    ensemble = _ensemble(meta)
    return (int(ensemble.get("members") or 0) or None) if ensemble else None


def trained_on(meta: Mapping[str, str], data_root: Path, split: str) -> str | None:
    """Why the model's figures on ``split`` of ``data_root`` are in-sample, or None when they are not.

    A fold ensemble pooled train + val of its training data: each val image was trained on by K - 1 of the K
    members. Other data (``--data`` elsewhere) counts as the training data when the recorded path is absent here.
    """
    k = fold_members(meta)
    if split == "train":
        return "every member trained on most of it" if k else "the model trained on it"
    if not k or split != "val":
        return None
    recorded = meta.get("training_data")
    if recorded and Path(recorded).is_dir() and Path(recorded).resolve() != Path(data_root).resolve():
        return None
    return f"pooled for cross-validation: {k - 1} of the {k} members trained on each image"


def cv_section(meta: Mapping[str, str], run_dir: Path | None, positive_class: str,
               test_metrics: Mapping[str, Any], test_ci: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The summary.json ``cross_validation`` block, or None for a model that is not a fold ensemble."""
    ensemble = _ensemble(meta)
    if ensemble is None:
        return None
    oof = ensemble.get("oof") or {}
    tta = json.loads(meta["tta"]).get("mode") if "tta" in meta else None
    found = read_oof_csv(run_dir, positive_class)
    return {
        "members": ensemble.get("members"), "combination": ensemble.get("combination"), "tta": tta,
        "run": ensemble.get("run"),
        "fold_val_auc": ensemble.get("fold_val_auc"), "fold_val_auc_mean": ensemble.get("fold_val_auc_mean"),
        "fold_val_auc_sd": ensemble.get("fold_val_auc_sd"),
        "oof": oof,
        "threshold_transfer": {
            "threshold": oof.get("threshold"),
            "oof_sensitivity": oof.get("sensitivity"), "oof_specificity": oof.get("specificity"),
            "evaluated_sensitivity": test_metrics.get("sensitivity"),
            "evaluated_specificity": test_metrics.get("specificity"),
        },
        "ensemble_evaluated": {"roc_auc": test_metrics.get("roc_auc"),
                               "roc_auc_ci": None if not test_ci else list(test_ci.get("roc_auc", [])) or None},
        "oof_file": None if found is None or run_dir is None else str(run_dir / OOF_FILE),
    }


def plot_cv_roc(folds: Mapping[int, tuple[np.ndarray, np.ndarray]], evaluated: tuple[np.ndarray, np.ndarray] | None,
                evaluated_name: str = "test") -> bytes:
    """One ROC curve per fold (its own val fold), the pooled OOF curve, and the ensemble on the evaluated split."""
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    from ..evaluation.plots import _legend_below, _png

    fig = Figure(figsize=(6.2, 5.8))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance")

    def curve(y: np.ndarray, p: np.ndarray, label: str, **style: Any) -> None:
        if 0 < y.sum() < len(y):
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, label=f"{label}, AUC {fmt(float(roc_auc_score(y, p)))} (n = {len(y)})", **style)

    for k, (y, p) in folds.items():
        curve(y, p, f"fold {k} (its val fold)", linewidth=1, alpha=0.7)
    pooled_y = np.concatenate([y for y, _ in folds.values()])
    pooled_p = np.concatenate([p for _, p in folds.values()])
    curve(pooled_y, pooled_p, "pooled out-of-fold", color="black", linewidth=2.2)
    if evaluated is not None:
        curve(*evaluated, f"ensemble on {evaluated_name}", color="tab:red", linewidth=2.2, linestyle="--")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 − specificity", ylabel="sensitivity",
           title="Cross-validation ROC curves", aspect="equal")
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _png(fig)


def model_card_lines(cv: Mapping[str, Any] | None) -> list[str]:
    """The model card's "Cross-validation" section (empty for a single model)."""
    if not cv:
        return []
    oof = cv.get("oof") or {}
    ci = oof.get("roc_auc_ci") or [None, None]
    aucs = ", ".join(fmt(a) for a in cv.get("fold_val_auc") or [])
    tr = cv["threshold_transfer"]
    ev = cv["ensemble_evaluated"]
    ev_ci = ev.get("roc_auc_ci") or [None, None]
    rows = [
        ["Members", f"{cv.get('members')} folds of run `{cv.get('run')}`, combined by {cv.get('combination')}"
                    + (f", TTA {cv['tta']}" if cv.get("tta") else "")],
        ["Per-fold validation AUC", aucs],
        ["Mean ± sd", f"{fmt(cv.get('fold_val_auc_mean'))} ± {fmt(cv.get('fold_val_auc_sd'))}"],
        ["Pooled out-of-fold AUC (95 % CI)", f"{fmt(oof.get('roc_auc'))} [{fmt(ci[0])}, {fmt(ci[1])}] on "
                                             f"{oof.get('n')} images"],
        ["Ensemble AUC on the evaluated split", f"{fmt(ev.get('roc_auc'))} [{fmt(ev_ci[0])}, {fmt(ev_ci[1])}]"],
        ["Threshold (fitted on OOF)", fmt(tr.get("threshold"))],
        ["Sensitivity / specificity: OOF → evaluated",
         f"{fmt(tr.get('oof_sensitivity'))} / {fmt(tr.get('oof_specificity'))} → "
         f"{fmt(tr.get('evaluated_sensitivity'))} / {fmt(tr.get('evaluated_specificity'))}"],
    ]
    return ["## Cross-validation", "",
            "| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), "",
            "Each fold's AUC is measured on the fold that also chose its best epoch (optimistic). Temperature and "
            "threshold were fitted on the pooled out-of-fold predictions of single members; the ensemble averages "
            "members, so its scores are somewhat less spread and the OOF threshold is an approximation for it.", ""]


def terminal_lines(cv: Mapping[str, Any] | None) -> list[str]:
    """The `test` table's cross-validation lines (empty for a single model)."""
    if not cv:
        return []
    oof = cv.get("oof") or {}
    ci = oof.get("roc_auc_ci") or [None, None]
    tr = cv["threshold_transfer"]
    return [f"  cross-validation: {cv.get('members')} folds ({cv.get('combination')}"
            + (f", TTA {cv['tta']}" if cv.get("tta") else "") + "); fold val AUC "
            f"{', '.join(fmt(a) for a in cv.get('fold_val_auc') or [])} (mean {fmt(cv.get('fold_val_auc_mean'))} ± "
            f"{fmt(cv.get('fold_val_auc_sd'))}); OOF AUC {fmt(oof.get('roc_auc'))} [{fmt(ci[0])}, {fmt(ci[1])}]",
            f"    OOF threshold {fmt(tr.get('threshold'))}: sensitivity/specificity OOF "
            f"{fmt(tr.get('oof_sensitivity'))}/{fmt(tr.get('oof_specificity'))} -> here "
            f"{fmt(tr.get('evaluated_sensitivity'))}/{fmt(tr.get('evaluated_specificity'))}"]
