"""`compare`: several models (a single run, a fold ensemble, their variants) on one split, in one table to choose from.

Each model goes through the `test` machinery (:func:`.model_run.predict_split`, :func:`.metrics.evaluate_predictions`,
:func:`.verdict.verdict_of`): ROC AUC with its interval on the evaluated split; the estimate made when the model was
chosen (a fold ensemble's pooled out-of-fold AUC, a single run's validation AUC of its best epoch); the difference to
the best model on the same images with a paired stratified bootstrap interval; file size; and model-only speed in
images/s on this machine (one decoded batch run repeatedly, so image decoding, which is the same for every model,
does not hide the difference). No torch.

K-class models: the AUC columns are the malignancy group's (``p_malignant``, as `test`'s binary sections), and
each model's entry adds ``multiclass``: balanced accuracy over the classes (the file's ``label`` output) with its
interval, macro AUC, and the paired class-stratified bootstrap difference to the model of best balanced accuracy.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import LabeledData, discover
from ..deploy.runtime import OnnxClassifier, iter_preprocessed
from ..errors import DataError
from ..evaluation.metrics import evaluate_predictions, fmt, roc_auc, stratified_bootstrap_indices
from ..evaluation.multiclass_metrics import evaluate_multiclass, paired_balanced_accuracy_difference
from ..evaluation.verdict import verdict_of
from .cv_report import trained_on
from .model_run import SplitPredictions, predict_split

COMPARE_SCHEMA = "skinonnx-model-comparison"
SPEED_SECONDS = 1.0  # timed inference per model (after one warm-up run), at least SPEED_MIN_RUNS runs
SPEED_MIN_RUNS = 3


@dataclass
class ModelRow:
    """One model's line of the comparison (also its compare.json entry)."""

    path: str
    sha256: str
    kind: str  # "single" or "ensemble of K folds[, TTA x]"
    size_bytes: int
    images_per_s: float | None
    speed_batch: int
    n: int
    roc_auc: float | None
    roc_auc_ci: list[float] | None
    threshold: float
    sensitivity: float | None
    specificity: float | None
    selection_name: str | None  # "out-of-fold" or "validation (best epoch)"
    selection_auc: float | None
    selection_ci: list[float] | None
    selection_n: int | None
    vs_best: dict[str, Any] | None  # {"model", "difference", "ci", "images"}: AUC of this minus the best's, paired
    verdict: dict[str, Any]


def _metadata_json(meta: dict[str, str], key: str) -> dict[str, Any]:
    try:
        value = json.loads(meta.get(key, ""))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _kind(meta: dict[str, str]) -> str:
    ensemble = _metadata_json(meta, "ensemble")
    if not ensemble:
        return "single"
    tta = _metadata_json(meta, "tta").get("mode")
    return f"ensemble of {ensemble.get('members')} folds" + (f", TTA {tta}" if tta and tta != "none" else "")


def _selection(meta: dict[str, str]) -> tuple[str | None, float | None, list[float] | None, int | None]:
    """The AUC estimate the model was chosen on: out-of-fold (fold ensembles) or the best epoch's validation AUC."""
    oof = _metadata_json(meta, "ensemble").get("oof") or {}
    if oof.get("roc_auc") is not None:
        return "out-of-fold", oof["roc_auc"], oof.get("roc_auc_ci"), oof.get("n")
    val_auc = _metadata_json(meta, "training_metrics").get("val_auc")
    return ("validation (best epoch)", val_auc, None, None) if val_auc is not None else (None, None, None, None)


def measure_speed(classifier: OnnxClassifier, paths: Sequence[str], *, batch_size: int, seconds: float = SPEED_SECONDS,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[float | None, int]:
    """Model-only throughput (images/s) on one batch of ``paths``, decoded once; (None, 0) when none decodes."""
    first = next(iter_preprocessed(paths[:batch_size], classifier.preprocessing, batch_size=batch_size,
                                   max_pixels=max_pixels, pixels_only=classifier.takes_uint8), [])
    arrays = [a for _, a, _ in first if a is not None]
    if not arrays:
        return None, 0
    batch = np.stack(arrays)
    classifier.predict_arrays(batch)  # warm-up: first-run allocations and graph preparation are not speed
    runs, start = 0, time.perf_counter()
    while runs < SPEED_MIN_RUNS or time.perf_counter() - start < seconds:
        classifier.predict_arrays(batch)
        runs += 1
    return len(arrays) * runs / (time.perf_counter() - start), len(arrays)


def paired_auc_difference(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, resamples: int, seed: int,
                          confidence: float) -> tuple[float, list[float] | None]:
    """AUC(a) - AUC(b) on the same images, with a stratified percentile bootstrap interval (same resamples for both)."""
    diff = roc_auc(y, p_a) - roc_auc(y, p_b)
    if not resamples or not 0 < y.sum() < len(y):
        return diff, None
    rows = stratified_bootstrap_indices(y, resamples, seed)
    deltas = np.array([roc_auc(y[i], p_a[i]) - roc_auc(y[i], p_b[i]) for i in rows])
    alpha = (1 - confidence) / 2
    return diff, [float(np.quantile(deltas, alpha)), float(np.quantile(deltas, 1 - alpha))]


def _check_same_task(classifiers: Sequence[OnnxClassifier], data: LabeledData) -> None:
    first = classifiers[0].contract
    for c in classifiers:
        if set(c.contract.classes) != set(data.classes):
            raise DataError(f"the data's classes {list(data.classes)} differ from {c.path}'s "
                            f"{list(c.contract.classes)}")
        if c.contract.positive_class != first.positive_class:
            raise DataError(f"{c.path} calls {c.contract.positive_class!r} positive, {classifiers[0].path} "
                            f"{first.positive_class!r}: the models answer different questions")
        if c.contract.malignant_classes != first.malignant_classes:
            raise DataError(f"{c.path}'s malignancy group is {list(c.contract.malignant_classes)}, "
                            f"{classifiers[0].path}'s {list(first.malignant_classes)}: the models answer different "
                            "questions")


def compare_models(classifiers: Sequence[OnnxClassifier], data_root: str | os.PathLike[str], *, split: str = "test",
                   batch_size: int = 16, bootstrap: int = 1000, ci_seed: int = 0, confidence: float = 0.95,
                   max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True, speed_seconds: float = SPEED_SECONDS,
                   echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The compare.json document: one :class:`ModelRow` per model, best test AUC first is left to the reader."""
    from ..hashing import file_sha256

    data = discover(data_root, write_split_file=False)
    for note in data.notes:
        echo(note)
    _check_same_task(classifiers, data)
    paths = [str(s.path) for s in data.split(split)]
    rows: list[ModelRow] = []
    extras: list[dict[str, Any] | None] = []  # K classes: each model's "multiclass" entry
    scored: list[SplitPredictions] = []
    for c in classifiers:
        echo(f"{c.path}: {split} split")
        evaluated = predict_split(c, data, split, c.contract.threshold, batch_size=batch_size, progress=progress,
                                  max_pixels=max_pixels)
        result = evaluate_predictions(evaluated.y_true, evaluated.y_prob, c.contract.threshold, bootstrap=bootstrap,
                                      seed=ci_seed, confidence=confidence)
        m, ci = result["metrics"], result["ci"]
        sel_name, sel_auc, sel_ci, sel_n = _selection(c.metadata)
        mini = {"metrics": m, "ci": ci, "bootstrap": {"confidence": confidence} if bootstrap else None,
                "data": {"split": split, "trained_on": trained_on(c.metadata, data.root, split)},
                "cross_validation": {"oof": _metadata_json(c.metadata, "ensemble").get("oof")}}
        speed, speed_batch = measure_speed(c, paths, batch_size=batch_size, seconds=speed_seconds,
                                           max_pixels=max_pixels)
        rows.append(ModelRow(str(c.path), file_sha256(c.path), _kind(c.metadata), c.path.stat().st_size, speed,
                             speed_batch, m["n"], m["roc_auc"], None if ci is None else ci["roc_auc"],
                             c.contract.threshold, m["sensitivity"], m["specificity"], sel_name, sel_auc, sel_ci,
                             sel_n, None, verdict_of(mini).as_dict()))
        scored.append(evaluated)
        extras.append(_multiclass_entry(c, evaluated, bootstrap=bootstrap, seed=ci_seed, confidence=confidence))
    _paired_to_best(rows, scored, bootstrap=bootstrap, seed=ci_seed, confidence=confidence)
    _paired_to_best_balanced(extras, rows, scored, bootstrap=bootstrap, seed=ci_seed, confidence=confidence)
    return {"schema": COMPARE_SCHEMA, "schema_version": 1,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": {"root": str(data.root), "split": split, "n_images": len(paths)},
            "provider": classifiers[0].provider,
            "bootstrap": None if not bootstrap else {"resamples": bootstrap, "confidence": confidence, "seed": ci_seed},
            "speed": {"what": "model-only images/s on one decoded batch, after a warm-up run",
                      "seconds_per_model": speed_seconds},
            "models": [asdict(r) | ({"multiclass": e} if e else {}) for r, e in zip(rows, extras, strict=True)]}


def _multiclass_entry(classifier: OnnxClassifier, evaluated: SplitPredictions, *, bootstrap: int, seed: int,
                      confidence: float) -> dict[str, Any] | None:
    """A K-class model's ``multiclass`` entry (None for two classes)."""
    if evaluated.classes is None or evaluated.probabilities is None or evaluated.decided is None:
        return None
    classes = classifier.contract.classes
    result = evaluate_multiclass(evaluated.classes, evaluated.probabilities, evaluated.decided, classes,
                                 bootstrap=bootstrap, seed=seed, confidence=confidence)
    m, ci = result["metrics"], result["ci"] or {}
    return {"malignant_classes": list(classifier.contract.malignant_classes),
            "balanced_accuracy": m["balanced_accuracy"], "balanced_accuracy_ci": ci.get("balanced_accuracy"),
            "macro_auc": m["macro_auc"], "macro_auc_ci": ci.get("macro_auc"), "vs_best": None}


def _paired_to_best_balanced(extras: list[dict[str, Any] | None], rows: list[ModelRow],
                             scored: list[SplitPredictions], *, bootstrap: int, seed: int, confidence: float) -> None:
    """Fill each K-class entry's ``vs_best``: its balanced accuracy minus the best one's on the images both read."""
    ranked = [i for i, e in enumerate(extras) if e is not None and np.isfinite(e["balanced_accuracy"])]
    if len(ranked) < 2:
        return
    best = max(ranked, key=lambda i: extras[i]["balanced_accuracy"])  # type: ignore[index]
    ref = {r["path"]: (t, d) for r, t, d in zip(scored[best].rows, scored[best].classes, scored[best].decided,
                                                strict=True)}
    for i in ranked:
        if i == best:
            continue
        pairs = [(ref[r["path"]][0], d, ref[r["path"]][1]) for r, d in zip(scored[i].rows, scored[i].decided,
                                                                           strict=True) if r["path"] in ref]
        if not pairs:
            continue
        y, d_this, d_best = (np.array(v) for v in zip(*pairs, strict=True))
        diff, ci = paired_balanced_accuracy_difference(y, d_this, d_best, scored[i].probabilities.shape[1],
                                                       resamples=bootstrap, seed=seed, confidence=confidence)
        extras[i]["vs_best"] = {"model": rows[best].path, "difference": diff, "ci": ci,  # type: ignore[index]
                                "images": len(y)}


def _paired_to_best(rows: list[ModelRow], scored: list[SplitPredictions], *, bootstrap: int, seed: int,
                    confidence: float) -> None:
    """Fill ``vs_best`` of every other model: its AUC minus the best one's on the images both could read."""
    ranked = [i for i, r in enumerate(rows) if r.roc_auc is not None and np.isfinite(r.roc_auc)]
    if len(ranked) < 2:
        return
    best = max(ranked, key=lambda i: rows[i].roc_auc)  # type: ignore[arg-type,return-value]
    ref = {r["path"]: (t, p) for r, t, p in zip(scored[best].rows, scored[best].y_true, scored[best].y_prob,
                                                strict=True)}
    for i in ranked:
        if i == best:
            continue
        pairs = [(ref[r["path"]][0], p, ref[r["path"]][1]) for r, p in zip(scored[i].rows, scored[i].y_prob,
                                                                           strict=True) if r["path"] in ref]
        if not pairs:
            continue
        y, p_this, p_best = (np.array(v) for v in zip(*pairs, strict=True))
        diff, ci = paired_auc_difference(y.astype(int), p_this, p_best, resamples=bootstrap, seed=seed,
                                         confidence=confidence)
        rows[i].vs_best = {"model": rows[best].path, "difference": diff, "ci": ci, "images": len(y)}


# --------------------------------------------------------------------------- tables


COLUMNS = ("model", "kind", "size MB", "images/s", "AUC [CI]", "selection AUC [CI]", "sens / spec",
           "vs best: ΔAUC [CI]", "verdict")


def _auc(value: float | None, ci: Sequence[float] | None) -> str:
    return fmt(value) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def model_names(doc: dict[str, Any]) -> list[str]:
    """File names, or the paths where two models share a file name (two runs' model.onnx)."""
    base = [os.path.basename(r["path"]) for r in doc["models"]]
    return base if len(set(base)) == len(base) else [r["path"] for r in doc["models"]]


MULTICLASS_COLUMNS = ("balanced acc. [CI]", "vs best: Δbal. acc. [CI]")


def columns(doc: dict[str, Any]) -> tuple[str, ...]:
    """The table's columns: K-class models add balanced accuracy and its paired difference."""
    return COLUMNS + MULTICLASS_COLUMNS if _multiclass(doc) else COLUMNS


def _multiclass(doc: dict[str, Any]) -> bool:
    return any(r.get("multiclass") for r in doc["models"])


def _difference(vs: dict[str, Any] | None, defined: bool, several: bool) -> str:
    if vs is None:
        return "best" if defined and several else "n/a"
    return f"{vs['difference']:+.3f}" + (f" [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]" if vs["ci"] else "")


def table_rows(doc: dict[str, Any]) -> list[list[str]]:
    out = []
    for name, r in zip(model_names(doc), doc["models"], strict=True):
        selection = "n/a" if r["selection_auc"] is None else (
            f"{_auc(r['selection_auc'], r['selection_ci'])} {r['selection_name']}"
            + (f", n {r['selection_n']}" if r["selection_n"] else ""))
        vs = r["vs_best"]
        verdict = r["verdict"]
        said = {True: "no better than chance", False: "above chance", None: "vs chance unknown (no CI)"}[
            verdict["no_better_than_chance"]]
        if verdict["advice"] and "disagree" in verdict["advice"]:
            said += "; OOF and test disagree"
        out.append([name, r["kind"], f"{r['size_bytes'] / 1e6:.1f}",
                    "n/a" if r["images_per_s"] is None else f"{r['images_per_s']:.1f}",
                    _auc(r["roc_auc"], r["roc_auc_ci"]) + f", n {r['n']}", selection,
                    f"{fmt(r['sensitivity'])} / {fmt(r['specificity'])} @ {r['threshold']:.3f}",
                    "best" if vs is None and r["roc_auc"] is not None and len(doc["models"]) > 1 else
                    "n/a" if vs is None else f"{vs['difference']:+.3f}" + (
                        f" [{vs['ci'][0]:+.3f}, {vs['ci'][1]:+.3f}]" if vs["ci"] else ""),
                    said])
        k = r.get("multiclass")
        if k:
            out[-1] += [_auc(k["balanced_accuracy"], k["balanced_accuracy_ci"]),
                        _difference(k["vs_best"], k["balanced_accuracy"] is not None, len(doc["models"]) > 1)]
        elif _multiclass(doc):
            out[-1] += ["n/a", "n/a"]
    return out


def text_table(doc: dict[str, Any]) -> str:
    rows = [list(columns(doc)), *table_rows(doc)]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join([*lines, "", *notes(doc)])


def markdown_table(doc: dict[str, Any]) -> str:
    d = doc["data"]
    head = [f"# Model comparison on the `{d['split']}` split of `{d['root']}` ({d['n_images']} images)", ""]
    body = ["| " + " | ".join(columns(doc)) + " |", "|" + "---|" * len(columns(doc)),
            *("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table_rows(doc))]
    return "\n".join([*head, *body, "", *(f"- {n}" for n in notes(doc)), ""])


def notes(doc: dict[str, Any]) -> list[str]:
    level = f"{doc['bootstrap']['confidence']:.0%}" if doc.get("bootstrap") else None
    out = [f"AUC on the {doc['data']['split']} split at each model's own threshold"
           + (f"; {level} stratified bootstrap intervals ({doc['bootstrap']['resamples']} resamples)" if level else
              "; no intervals (--no-ci)") + ".",
           "selection AUC: what the model was chosen on (out-of-fold for a fold ensemble, the best epoch's "
           "validation AUC for a single run; both optimistic, the out-of-fold one on more images).",
           "vs best: this model's AUC minus the best one's on the same images, paired bootstrap; an interval "
           "containing 0 means this split cannot tell them apart: choose on size and speed.",
           f"images/s: model only, {doc['provider']}, one decoded batch on this machine (decoding excluded)."]
    if _multiclass(doc):
        out.append("K classes: AUC, sens / spec and ΔAUC are the malignancy group's (p_malignant against the true "
                   "group); balanced acc. scores the file's own label output over the classes, Δbal. acc. its paired "
                   "class-stratified bootstrap difference to the model of best balanced accuracy.")
    for name, r in zip(model_names(doc), doc["models"], strict=True):
        for line in [*r["verdict"]["warnings"], *([r["verdict"]["advice"]] if r["verdict"]["advice"] else [])]:
            out.append(f"{name}: {line}")
    return out


def write_comparison(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """compare.json and compare.md, atomically."""
    from ..atomic import write_text
    from .provenance import dumps_strict

    return [write_text(out_dir / "compare.json", dumps_strict(doc)), write_text(out_dir / "compare.md",
                                                                                  markdown_table(doc))]
