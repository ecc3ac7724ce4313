"""`train --folds K [--fold k]`: K-fold cross-validation, one :func:`~skinonnx.training.loop.fit` per fold.

The test split stays held out; train + val are pooled and cut into K stratified (grouped) folds
(:mod:`skinonnx.data.folds`). Fold k trains on the other K-1 folds and picks its best epoch on
fold k. A run folder ``runs/<name>/`` holds:

    cv.json          settings, the state of every fold, and (once complete) the out-of-fold results
    folds.csv        path,label,group,fold of every pooled image (its SHA-256 is recorded by each fold)
    fold-<k>/        weights/{best,last}.pt, metrics.csv, config.json, fold.json (state), oof.csv
    oof.csv          every pooled image with the probability of the one model that never trained on it

Each fold writes only inside its own folder, so folds can train at the same time on different
machines (``--fold k``) and be copied together; ``fold.json`` is the truth about a fold and
``cv.json``'s table is refreshed from it. When every fold is done, temperature and threshold are
fitted on the out-of-fold (OOF) logits of all pooled images, instead of one small val split.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import ensure_writable_dir, write_json, write_text
from ..data.folds import FOLDS_FILE, assign_folds, check_fold_count, read_folds_csv, write_folds_csv
from ..data.layouts import LabeledData, Sample
from ..errors import CheckpointError
from ..evaluation.metrics import roc_auc
from ..evaluation.multiclass_metrics import malignant_probability, malignant_truth
from ..hashing import file_sha256
from ..softmax import softmax
from .config import TrainConfig, resumed_config
from .cv_oof import combine, fold_oof_text
from .cv_record import (
    FOLD_STATE,
    OOF_FILE,
    CVError,
    core_settings,
    fold_dir,
    fold_state,
    new_record,
    now,
    read_cv,
    refresh_record,
)
from .data_checks import checked_data
from .runs import CV_FILE, is_cv_run, list_runs


def pooled(data: LabeledData) -> list[Sample]:
    """train + val, the images cross-validation cuts into folds (test stays out)."""
    return [*data.split("train"), *data.splits.get("val", [])]


def make_folds(data: LabeledData, k: int, seed: int) -> tuple[list[Sample], list[int]]:
    pool = pooled(data)
    labels = [s.label for s in pool]
    groups = [s.group for s in pool] if any(s.group is not None for s in pool) else None
    keys = [str(s.path) for s in pool]
    check_fold_count(labels, groups, k, data.classes, keys)
    return pool, assign_folds(keys, labels, groups, k, seed=seed, n_classes=len(data.classes))


def fold_data(data: LabeledData, pool: list[Sample], folds: list[int], k: int) -> LabeledData:
    """The data one fold trains on: train = the other folds, val = fold k, test untouched."""
    return dataclasses.replace(data, splits={"train": [s for s, f in zip(pool, folds, strict=True) if f != k],
                                             "val": [s for s, f in zip(pool, folds, strict=True) if f == k],
                                             **({"test": data.splits["test"]} if data.splits.get("test") else {})})


def saved_folds(run_dir: Path, data: LabeledData) -> tuple[list[Sample], list[int]]:
    """The pooled images in folds.csv order of the data as it is now; refuses changed data."""
    mapping = read_folds_csv(run_dir / FOLDS_FILE, data.root)
    pool = pooled(data)
    now = {s.path.resolve() for s in pool}
    added, removed = now - set(mapping), set(mapping) - now
    if added or removed:
        raise CVError(f"{data.root}: the data changed since {run_dir / FOLDS_FILE} was written ({len(added)} "
                      f"image(s) added, {len(removed)} removed to train+val); finish the run on the same data or start "
                      "a new one")
    return pool, [mapping[s.path.resolve()] for s in pool]


@dataclass
class CVResult:
    run_dir: Path
    folds: int
    trained: list[int]
    complete: bool
    summary: dict[str, Any] | None = None
    stopped: bool = False  # an on_epoch callback stopped a fold (a pruned trial)


def _locate(cfg: TrainConfig, folds: int | None, resume: bool, explicit: set[str]) -> Path:
    if resume and "name" not in explicit:
        found = next((r for r in list_runs(cfg.runs_dir) if is_cv_run(r)), None)  # the one clock of runs.py
        if found is None:
            raise CVError(f"--resume: no cross-validation run under {cfg.runs_dir}/ (pass --name NAME)")
        return found
    return Path(cfg.runs_dir) / cfg.name


def train_cv(cfg: TrainConfig, folds: int | None, *, fold: int | None = None, resume: bool = False,
             explicit: set[str] | frozenset[str] = frozenset(), echo: Callable[[str], None] = print,
             tracking_parent: Any = None, on_epoch: tuple = ()) -> CVResult:
    """Train every fold (or only ``fold``) of the run ``runs/<cfg.name>``; finished folds are never retrained.

    With ``--track`` the run is an MLflow run (a child of ``tracking_parent`` when given, e.g. a study's) and each
    fold a child of it; ``on_epoch``: callbacks for every fold's epochs (:data:`~skinonnx.training.loop.EpochCallback`).
    """
    from . import tracked_run
    from .loop import fit

    explicit = set(explicit)
    cfg.check_class_bias(cross_validation=True)
    if folds is not None and folds < 2:
        raise CVError(f"--folds {folds}: cross-validation needs at least 2 folds")
    run_dir = _locate(cfg, folds, resume, explicit)
    if is_cv_run(run_dir):
        cv = read_cv(run_dir)
        k = int(cv["folds"])
        if folds is not None and folds != k:
            raise CVError(f"run '{run_dir.name}' has {k} folds, not --folds {folds}")
        _check_fold_index(fold, k)
        if resume:
            cfg = resumed_config(cv["config"], cfg, explicit, run_dir / CV_FILE)
        elif fold is None:
            raise CVError(f"run '{run_dir.name}' exists ({run_dir}); continue it with --resume, or choose another "
                          "--name")
        else:
            _check_same_settings(cv["config"], cfg.to_dict(), f"run '{run_dir.name}'")
            cfg = dataclasses.replace(cfg, name=run_dir.name)
        data, leakage = checked_data(cfg, echo, cross_validation=True)
        if tuple(cv["classes"]) != data.classes:
            raise CVError(f"run '{run_dir.name}' has classes {cv['classes']}, the data {list(data.classes)}")
        pool, assignment = saved_folds(run_dir, data)
    else:
        if resume:
            raise CVError(f"--resume: {run_dir} is not a cross-validation run (no {CV_FILE})")
        if folds is None:
            raise CVError("--folds K is needed to start a cross-validation run")
        k = folds
        _check_fold_index(fold, k)
        data, leakage = checked_data(cfg, echo, cross_validation=True)
        pool, assignment = make_folds(data, k, cfg.seed)  # raises before anything is written
        try:  # claimed atomically: of two runs started with one --name, one gets it
            run_dir.mkdir(parents=True, exist_ok=fold is not None)
        except FileExistsError:
            raise CVError(f"{run_dir} is taken (by another run, or one starting now); choose another --name") from None
        ensure_writable_dir(run_dir)
        write_folds_csv(run_dir / FOLDS_FILE, pool, assignment, data.classes, data.root)
        write_json(run_dir / CV_FILE, new_record(cfg, k, data, pool, assignment))
        echo(f"cross-validation run {run_dir}: {k} folds over {len(pool)} train+val images "
             f"({'grouped, ' if any(s.group for s in pool) else ''}stratified, seed {cfg.seed}); "
             f"{len(data.splits.get('test', []))} test images held out")
    for note in data.notes:
        echo(f"note: {note}")
    folds_sha = file_sha256(run_dir / FOLDS_FILE)
    trained = []
    cfg = dataclasses.replace(cfg, name=run_dir.name, runs_dir=str(run_dir.parent))
    tracker = tracked_run.start(cfg, echo, parent=tracking_parent, tags={"skinonnx.kind": "cv", "folds": str(k)})
    try:
        for k_i in ([fold] if fold is not None else range(k)):
            state = fold_state(run_dir, k_i)
            if state is not None and state.get("status") == "done":
                echo(f"fold {k_i}: already done (val AUC {state.get('val_auc', float('nan')):.4f}); not retrained")
                continue
            if not _train_fold(fit, cfg, run_dir, k_i, k, data, pool, assignment, folds_sha, resume, explicit, echo,
                               leakage, tracker, on_epoch):
                tracked_run.finish(tracker, run_dir, "KILLED", echo=echo)
                return CVResult(run_dir, k, trained, False, stopped=True)
            trained.append(k_i)
            refresh_record(run_dir)
    except BaseException as exc:
        tracked_run.finish(tracker, run_dir, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", echo=echo)
        raise
    record = refresh_record(run_dir)
    summary = None
    if record["complete"]:
        summary = combine(run_dir, echo=echo)
        tracked_run.finish(tracker, run_dir, "FINISHED", {
            "oof_auc": summary["roc_auc"], "fold_val_auc_mean": summary["fold_val_auc_mean"]}, echo=echo)
    else:
        left = [i for i in range(k) if (fold_state(run_dir, i) or {}).get("status") != "done"]
        echo(f"run '{run_dir.name}': folds {', '.join(map(str, left))} still to train "
             f"(train --name {run_dir.name} --folds {k} --fold N, or --resume)")
        tracked_run.finish(tracker, run_dir, "FINISHED", echo=echo)
    return CVResult(run_dir, k, trained, bool(record["complete"]), summary)


def _check_fold_index(fold: int | None, k: int) -> None:
    if fold is not None and not 0 <= fold < k:
        raise CVError(f"--fold {fold} is out of range: folds are numbered 0 to {k - 1}")


def _check_same_settings(saved: dict[str, Any], given: dict[str, Any], what: str) -> None:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # a setting newer than the run: default
    a, b = core_settings({**defaults, **saved}), core_settings(given)
    diff = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
    if diff:
        shown = ", ".join(f"--{key.replace('_', '-')} (run: {a.get(key)!r}, given: {b.get(key)!r})" for key in diff)
        raise CVError(f"{what} was set up with other settings: {shown}; every fold must train with the same ones")


def _train_fold(fit, cfg: TrainConfig, run_dir: Path, k: int, n_folds: int, data: LabeledData, pool: list[Sample],
                assignment: list[int], folds_sha: str, resume: bool, explicit: set[str], echo,
                leakage: dict[str, Any] | None = None, tracker: Any = None, on_epoch: tuple = ()) -> bool:
    """Train fold ``k`` and record it as done; False when an on_epoch callback stopped it (nothing recorded)."""
    from .checkpoint import load_checkpoint

    where = fold_dir(run_dir, k)
    fold_cfg = dataclasses.replace(cfg, name=where.name, runs_dir=str(run_dir), checkpoint_dir=str(where / "weights"))
    started = (where / "weights" / "last.pt").is_file()
    if started and not resume:
        raise CVError(f"fold {k} of run '{run_dir.name}' was started ({where / 'weights' / 'last.pt'}); "
                      "continue it with --resume")
    t0 = time.time()
    ensure_writable_dir(where)
    write_json(where / FOLD_STATE, {"fold": k, "status": "running", "started_at": now()})

    def fold_echo(msg: str) -> None:
        echo(f"[fold {k + 1}/{n_folds}] {msg}")

    result = fit(fold_cfg, resume=started, explicit=explicit | {"runs_dir", "checkpoint_dir"}, echo=fold_echo,
                 data=fold_data(data, pool, assignment, k), claimed=True, leakage=leakage, tracking_parent=tracker,
                 on_epoch=on_epoch)
    if result.stopped:
        return False
    best = load_checkpoint(result.best_path)
    preds = best.get("val_predictions") or {}
    logits = np.asarray(preds["logits"].numpy(), np.float64) if "logits" in preds else np.empty((0, 2))
    if len(logits) != len(result.val_samples):
        raise CheckpointError(f"{result.best_path}: its validation predictions do not match fold {k}'s images")
    write_text(where / OOF_FILE, fold_oof_text(result.val_samples, logits, k, data))
    group = data.malignant_group()
    probs = malignant_probability(softmax(logits), group)
    y = malignant_truth([s.label for s in result.val_samples], group)
    write_json(where / FOLD_STATE, {
        "fold": k, "status": "done", "finished_at": now(), "seconds": time.time() - t0,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "select": cfg.select,
        "best_metric": result.best_metric, "val_auc": roc_auc(y, probs), "n_train": len(fold_data(
            data, pool, assignment, k).splits["train"]), "n_val": len(result.val_samples),
        "best_sha256": file_sha256(result.best_path), "folds_sha256": folds_sha,
        "settings": core_settings(cfg.to_dict())})
    return True


