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

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import ensure_writable_dir, write_json, write_text
from ..data.folds import FOLDS_FILE, assign_folds, check_fold_count, folds_csv_text, read_folds_csv
from ..data.layouts import LabeledData, Sample, discover
from ..errors import CheckpointError, SkinOnnxError
from ..evaluation.metrics import binary_metrics, bootstrap_ci, roc_auc
from ..hashing import file_sha256
from ..softmax import softmax
from .config import TrainConfig, resumed_config

CV_FILE = "cv.json"
OOF_FILE = "oof.csv"
FOLD_STATE = "fold.json"
CV_FORMAT = "skinonnx-cv"
CV_FORMAT_VERSION = 1
#: not part of what a fold *is*: where it ran, from where, and how fast
LOCAL_SETTINGS = frozenset({"name", "data", "device", "workers", "cache_mb", "max_pixels", "checkpoint_dir",
                            "runs_dir", "progress", "amp", "channels_last"})
OOF_BOOTSTRAP = 1000


class CVError(SkinOnnxError):
    """A cross-validation run is missing, incomplete or inconsistent."""


def core_settings(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(config.items()) if k not in LOCAL_SETTINGS}


def fold_dir(run_dir: Path, k: int) -> Path:
    return run_dir / f"fold-{k}"


def is_cv_run(path: str | Path) -> bool:
    return (Path(path) / CV_FILE).is_file()


def newest_cv_run(runs_dir: str | Path) -> Path | None:
    """The CV run under ``runs_dir`` whose cv.json changed last, or None."""
    found = [p.parent for p in Path(runs_dir).glob(f"*/{CV_FILE}")]
    return max(found, key=lambda p: (p / CV_FILE).stat().st_mtime, default=None)


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CVError(f"{path}: not found ({what})") from None
    except (OSError, ValueError) as exc:
        raise CVError(f"{path}: unreadable {what} ({exc})") from None
    if not isinstance(value, dict):
        raise CVError(f"{path}: not a {what}")
    return value


def read_cv(run_dir: Path) -> dict[str, Any]:
    cv = read_json(run_dir / CV_FILE, "cross-validation record")
    if cv.get("format") != CV_FORMAT or cv.get("format_version") != CV_FORMAT_VERSION:
        raise CVError(f"{run_dir / CV_FILE}: not a skinonnx cross-validation record (format {cv.get('format')!r})")
    return cv


def fold_state(run_dir: Path, k: int) -> dict[str, Any] | None:
    path = fold_dir(run_dir, k) / FOLD_STATE
    return read_json(path, "fold state") if path.is_file() else None


# --------------------------------------------------------------------------- data and folds


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


# --------------------------------------------------------------------------- training


@dataclass
class CVResult:
    run_dir: Path
    folds: int
    trained: list[int]
    complete: bool
    summary: dict[str, Any] | None = None


def _locate(cfg: TrainConfig, folds: int | None, resume: bool, explicit: set[str]) -> Path:
    if resume and "name" not in explicit:
        found = newest_cv_run(cfg.runs_dir)
        if found is None:
            raise CVError(f"--resume: no cross-validation run under {cfg.runs_dir}/ (pass --name NAME)")
        return found
    return Path(cfg.runs_dir) / cfg.name


def train_cv(cfg: TrainConfig, folds: int | None, *, fold: int | None = None, resume: bool = False,
             explicit: set[str] | frozenset[str] = frozenset(), echo: Callable[[str], None] = print) -> CVResult:
    """Train every fold (or only ``fold``) of the run ``runs/<cfg.name>``; finished folds are never retrained."""
    from .loop import fit

    explicit = set(explicit)
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
        data = discover(cfg.data, positive_class=cfg.positive_class, seed=cfg.seed)
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
        data = discover(cfg.data, positive_class=cfg.positive_class, seed=cfg.seed)
        pool, assignment = make_folds(data, k, cfg.seed)  # raises before anything is written
        ensure_writable_dir(run_dir)
        text = folds_csv_text(pool, assignment, data.classes, data.root)
        write_text(run_dir / FOLDS_FILE, text)
        write_json(run_dir / CV_FILE, _new_record(cfg, k, data, pool, assignment))
        echo(f"cross-validation run {run_dir}: {k} folds over {len(pool)} train+val images "
             f"({'grouped, ' if any(s.group for s in pool) else ''}stratified, seed {cfg.seed}); "
             f"{len(data.splits.get('test', []))} test images held out")
    for note in data.notes:
        echo(f"note: {note}")
    folds_sha = file_sha256(run_dir / FOLDS_FILE)
    trained = []
    for k_i in ([fold] if fold is not None else range(k)):
        state = fold_state(run_dir, k_i)
        if state is not None and state.get("status") == "done":
            echo(f"fold {k_i}: already done (val AUC {state.get('val_auc', float('nan')):.4f}); not retrained")
            continue
        _train_fold(fit, cfg, run_dir, k_i, k, data, pool, assignment, folds_sha, resume, explicit, echo)
        trained.append(k_i)
        refresh_record(run_dir)
    record = refresh_record(run_dir)
    summary = None
    if record["complete"]:
        summary = combine(run_dir, echo=echo)
    else:
        left = [i for i in range(k) if (fold_state(run_dir, i) or {}).get("status") != "done"]
        echo(f"run '{run_dir.name}': folds {', '.join(map(str, left))} still to train "
             f"(train --name {run_dir.name} --folds {k} --fold N, or --resume)")
    return CVResult(run_dir, k, trained, bool(record["complete"]), summary)


def _check_fold_index(fold: int | None, k: int) -> None:
    if fold is not None and not 0 <= fold < k:
        raise CVError(f"--fold {fold} is out of range: folds are numbered 0 to {k - 1}")


def _check_same_settings(saved: dict[str, Any], given: dict[str, Any], what: str) -> None:
    a, b = core_settings(saved), core_settings(given)
    diff = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
    if diff:
        shown = ", ".join(f"--{key.replace('_', '-')} (run: {a.get(key)!r}, given: {b.get(key)!r})" for key in diff)
        raise CVError(f"{what} was set up with other settings: {shown}; every fold must train with the same ones")


def _new_record(cfg: TrainConfig, k: int, data: LabeledData, pool: list[Sample], assignment: list[int]
                ) -> dict[str, Any]:
    sizes = [[sum(1 for s, f in zip(pool, assignment, strict=True) if f == i and s.label == c)
              for c in range(len(data.classes))] for i in range(k)]
    return {"format": CV_FORMAT, "format_version": CV_FORMAT_VERSION, "name": cfg.name, "folds": k,
            "seed": cfg.seed, "created_at": _now(), "skinonnx_version": __version__, "config": cfg.to_dict(),
            "data_root": str(Path(cfg.data).resolve()), "layout": data.layout, "classes": list(data.classes),
            "positive_index": data.positive_index, "grouped": any(s.group for s in pool),
            "fold_class_counts": sizes, "n_pooled": len(pool), "n_test": len(data.splits.get("test", [])),
            "state": {f"fold-{i}": "pending" for i in range(k)}, "complete": False}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _train_fold(fit, cfg: TrainConfig, run_dir: Path, k: int, n_folds: int, data: LabeledData, pool: list[Sample],
                assignment: list[int], folds_sha: str, resume: bool, explicit: set[str], echo) -> None:
    from .checkpoint import load_checkpoint

    where = fold_dir(run_dir, k)
    fold_cfg = dataclasses.replace(cfg, name=where.name, runs_dir=str(run_dir), checkpoint_dir=str(where / "weights"))
    started = (where / "weights" / "last.pt").is_file()
    if started and not resume:
        raise CVError(f"fold {k} of run '{run_dir.name}' was started ({where / 'weights' / 'last.pt'}); "
                      "continue it with --resume")
    t0 = time.time()
    ensure_writable_dir(where)
    write_json(where / FOLD_STATE, {"fold": k, "status": "running", "started_at": _now()})

    def fold_echo(msg: str) -> None:
        echo(f"[fold {k}/{n_folds - 1}] {msg}")

    result = fit(fold_cfg, resume=started, explicit=explicit | {"runs_dir", "checkpoint_dir"}, echo=fold_echo,
                 data=fold_data(data, pool, assignment, k))
    best = load_checkpoint(result.best_path)
    preds = best.get("val_predictions") or {}
    logits = np.asarray(preds["logits"].numpy(), np.float64) if "logits" in preds else np.empty((0, 2))
    if len(logits) != len(result.val_samples):
        raise CheckpointError(f"{result.best_path}: its validation predictions do not match fold {k}'s images")
    write_text(where / OOF_FILE, _oof_text(result.val_samples, logits, k, data))
    probs = softmax(logits)[:, data.positive_index]
    y = np.array([int(s.label == data.positive_index) for s in result.val_samples])
    write_json(where / FOLD_STATE, {
        "fold": k, "status": "done", "finished_at": _now(), "seconds": time.time() - t0,
        "best_epoch": result.best_epoch, "epochs_run": result.epochs_run, "select": cfg.select,
        "best_metric": result.best_metric, "val_auc": roc_auc(y, probs), "n_train": len(fold_data(
            data, pool, assignment, k).splits["train"]), "n_val": len(result.val_samples),
        "best_sha256": file_sha256(result.best_path), "folds_sha256": folds_sha,
        "settings": core_settings(cfg.to_dict())})


def _oof_text(samples: list[Sample], logits: np.ndarray, k: int, data: LabeledData) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "group", "fold", *(f"logit_{c}" for c in data.classes)])
    for s, z in zip(samples, logits, strict=True):
        writer.writerow([s.path.resolve().relative_to(data.root.resolve()).as_posix()
                         if s.path.resolve().is_relative_to(data.root.resolve()) else str(s.path),
                         data.classes[s.label], s.group or "", k, *(repr(float(v)) for v in z)])
    return buf.getvalue()


def refresh_record(run_dir: Path) -> dict[str, Any]:
    """Rewrite cv.json's state table from the folds' own fold.json files."""
    cv = read_cv(run_dir)
    states = {}
    for i in range(int(cv["folds"])):
        st = fold_state(run_dir, i)
        states[f"fold-{i}"] = "pending" if st is None else str(st.get("status"))
    cv["state"] = states
    cv["complete"] = all(v == "done" for v in states.values())
    write_json(run_dir / CV_FILE, cv)
    return cv


# --------------------------------------------------------------------------- combining the folds


def read_oof(run_dir: Path, k: int, classes: list[str]) -> list[dict[str, Any]]:
    path = fold_dir(run_dir, k) / OOF_FILE
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return [{"path": r["path"], "label": r["label"], "group": r["group"], "fold": int(r["fold"]),
                 "logits": [float(r[f"logit_{c}"]) for c in classes]} for r in rows]
    except (OSError, KeyError, ValueError, csv.Error) as exc:
        raise CVError(f"{path}: cannot read the fold's out-of-fold predictions ({exc})") from None


def check_complete(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """cv.json and every fold's state, or a one-line error naming what is missing, unfinished or inconsistent."""
    cv = read_cv(run_dir)
    k = int(cv["folds"])
    states = [fold_state(run_dir, i) for i in range(k)]
    missing = [f"fold-{i}" for i, st in enumerate(states) if st is None]
    unfinished = [f"fold-{i}" for i, st in enumerate(states) if st is not None and st.get("status") != "done"]
    if missing or unfinished:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unfinished {', '.join(unfinished)}"] if unfinished else [])
        raise CVError(f"cross-validation run '{run_dir.name}' is incomplete ({'; '.join(parts)}): train them with "
                      f"`train --name {run_dir.name} --folds {k} --fold N` (or --resume), or copy their fold folders "
                      f"into {run_dir}")
    done: list[dict[str, Any]] = [st for st in states if st is not None]
    folds_sha = file_sha256(run_dir / FOLDS_FILE)
    other_folds = [f"fold-{st['fold']}" for st in done if st.get("folds_sha256") != folds_sha]
    if other_folds:
        raise CVError(f"run '{run_dir.name}': {', '.join(other_folds)} trained on another fold assignment than "
                      f"{run_dir / FOLDS_FILE}")
    reference = done[0].get("settings") or {}
    for st in done[1:]:
        settings = st.get("settings") or {}
        diff = sorted(key for key in set(reference) | set(settings) if reference.get(key) != settings.get(key))
        if diff:
            shown = ", ".join(f"{key} ({reference.get(key)!r} vs {settings.get(key)!r})" for key in diff)
            raise CVError(f"run '{run_dir.name}': fold-0 and fold-{st['fold']} were trained with different settings: "
                          f"{shown}")
    return cv, done


def combine(run_dir: Path, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Pool the folds' OOF predictions: fit temperature and threshold on them, and the OOF metrics.

    Written to ``oof.csv`` and cv.json's ``oof`` entry, which export puts into the ensemble's metadata.
    """
    from .finalize import calibrate_and_choose

    cv, done = check_complete(run_dir)
    classes, pos = list(cv["classes"]), int(cv["positive_index"])
    rows = [row for st in done for row in read_oof(run_dir, int(st["fold"]), classes)]
    rows.sort(key=lambda r: r["path"])
    logits = np.array([r["logits"] for r in rows], np.float64)
    labels = np.array([classes.index(r["label"]) for r in rows])
    config = cv["config"]
    extra = calibrate_and_choose(logits, labels, pos, config["threshold_policy"], bool(config["calibrate"]))
    temperature, decision = extra["calibration"]["temperature"], extra["decision"]
    prob = softmax(logits, temperature)[:, pos]
    raw = softmax(logits)[:, pos]
    y = (labels == pos).astype(int)
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
        "temperature": temperature, "calibration": extra["calibration"],
        "fold_val_auc": fold_aucs, "fold_val_auc_mean": float(np.mean(finite)) if finite else None,
        "fold_val_auc_sd": float(np.std(finite, ddof=1)) if len(finite) > 1 else None,
        "fold_best_epoch": [int(st["best_epoch"]) for st in done],
        "bootstrap": {"resamples": OOF_BOOTSTRAP, "seed": 0, "confidence": 0.95},
    }
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "group", "fold", *(f"logit_{c}" for c in classes), "probability",
                     "probability_uncalibrated"])
    for r, p, q in zip(rows, prob, raw, strict=True):
        writer.writerow([r["path"], r["label"], r["group"], r["fold"], *(repr(v) for v in r["logits"]),
                         f"{p:.6f}", f"{q:.6f}"])
    write_text(run_dir / OOF_FILE, buf.getvalue())
    cv["oof"] = summary
    cv["combined_at"] = _now()
    write_json(run_dir / CV_FILE, cv)
    sd = summary["fold_val_auc_sd"]
    echo(f"cross-validation '{run_dir.name}' complete: fold val AUC {summary['fold_val_auc_mean']:.4f}"
         + (f" ± {sd:.4f}" if sd is not None else "") + f"; OOF AUC {summary['roc_auc']:.4f} "
         f"[{summary['roc_auc_ci'][0]:.4f}, {summary['roc_auc_ci'][1]:.4f}] on {len(rows)} images; OOF temperature "
         f"{temperature:.3f}, threshold {decision['threshold']:.4f} ({decision['policy']}); {run_dir / OOF_FILE}")
    return summary


@dataclass
class CompleteRun:
    """A finished CV run, ready to export: the members' checkpoints in fold order and the OOF results."""

    run_dir: Path
    cv: dict[str, Any]
    folds: list[dict[str, Any]]
    best_paths: list[Path]

    @property
    def oof(self) -> dict[str, Any]:
        return self.cv["oof"]


def load_complete_run(run_dir: str | Path) -> CompleteRun:
    """Check a CV run for export; combines the folds first if that has not happened yet."""
    run_dir = Path(run_dir)
    if not is_cv_run(run_dir):
        raise CVError(f"{run_dir}: not a cross-validation run (no {CV_FILE})")
    cv, done = check_complete(run_dir)
    paths = []
    for st in done:
        best = fold_dir(run_dir, int(st["fold"])) / "weights" / "best.pt"
        if not best.is_file():
            raise CVError(f"run '{run_dir.name}': fold-{st['fold']} is marked done but {best} is missing")
        if file_sha256(best) != st.get("best_sha256"):
            raise CVError(f"run '{run_dir.name}': {best} changed after fold-{st['fold']} finished "
                          "(its SHA-256 differs from fold.json); retrain that fold")
        paths.append(best)
    if "oof" not in cv or not cv.get("complete"):
        refresh_record(run_dir)
        combine(run_dir, echo=lambda _msg: None)
        cv = read_cv(run_dir)
    return CompleteRun(run_dir, cv, done, paths)
