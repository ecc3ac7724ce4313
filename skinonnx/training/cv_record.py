"""A cross-validation run's records: ``cv.json`` (settings, state of every fold, OOF results) and ``fold.json``.

``fold.json`` is the truth about a fold; cv.json's table is refreshed from the folds' files (:func:`refresh_record`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import write_json
from ..data.folds import FOLDS_FILE
from ..data.layouts import LabeledData, Sample
from ..errors import SkinOnnxError
from ..hashing import file_sha256
from .config import TrainConfig
from .runs import CV_FILE

OOF_FILE = "oof.csv"
FOLD_STATE = "fold.json"
CV_FORMAT = "skinonnx-cv"
CV_FORMAT_VERSION = 1
#: not part of what a fold *is*: where it ran, from where, and how fast
LOCAL_SETTINGS = frozenset({"name", "data", "device", "workers", "cache_mb", "max_pixels", "checkpoint_dir",
                            "runs_dir", "progress", "amp", "channels_last", "track", "tracking_uri"})


class CVError(SkinOnnxError):
    """A cross-validation run is missing, incomplete or inconsistent."""


def core_settings(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sorted(config.items()) if k not in LOCAL_SETTINGS}


def fold_dir(run_dir: Path, k: int) -> Path:
    return run_dir / f"fold-{k}"


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


def new_record(cfg: TrainConfig, k: int, data: LabeledData, pool: list[Sample], assignment: list[int]
                ) -> dict[str, Any]:
    sizes = [[sum(1 for s, f in zip(pool, assignment, strict=True) if f == i and s.label == c)
              for c in range(len(data.classes))] for i in range(k)]
    return {"format": CV_FORMAT, "format_version": CV_FORMAT_VERSION, "name": cfg.name, "folds": k,
            "seed": cfg.seed, "created_at": now(), "skinonnx_version": __version__, "config": cfg.to_dict(),
            "data_root": str(Path(cfg.data).resolve()), "layout": data.layout, "classes": list(data.classes),
            "positive_index": data.positive_index, "malignant": list(data.malignant),
            "grouped": any(s.group for s in pool),
            "fold_class_counts": sizes, "n_pooled": len(pool), "n_test": len(data.splits.get("test", [])),
            "state": {f"fold-{i}": "pending" for i in range(k)}, "complete": False}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


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


