"""Run folders: ``runs/<name>/`` holds one run's ``weights/{best,last}.pt``, ``metrics.csv``, ``config.json``.

Resolves "the newest run", a run by name or by folder, and the run a ``--resume`` continues. Torch-free
(plain files and JSON), so commands that never touch torch can name runs too.

A run's ``state.json`` says how far it got: ``running`` (with the pid and host of the process; a dead pid
reads as ``interrupted``), ``interrupted`` (Ctrl-C) or ``finished``.
A cross-validation run (``cv.json``, folds in ``fold-<k>/weights/``) has no
top-level weights and is skipped where a single model is needed.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from ..atomic import write_json
from ..errors import CheckpointError

WEIGHTS_DIR = "weights"
STATE_FILE = "state.json"
CV_FILE = "cv.json"  # marks a cross-validation run (see cv_record.py)
DEFAULT_RUNS_DIR = "runs"


def weights_dir(run_dir: str | os.PathLike[str]) -> Path:
    return Path(run_dir) / WEIGHTS_DIR


def _run_time(run_dir: Path) -> float:
    """THE clock every "newest run" rule uses: when the run last wrote something that marks progress (last.pt,
    a cross-validation run's cv.json, else its config)."""
    for marker in (weights_dir(run_dir) / "last.pt", weights_dir(run_dir) / "best.pt", run_dir / CV_FILE,
                   run_dir / "config.json", run_dir):
        try:
            return marker.stat().st_mtime
        except OSError:
            continue
    return 0.0


def list_runs(runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> list[Path]:
    """Run folders under ``runs_dir``, newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
            and ((p / "config.json").is_file() or weights_dir(p).is_dir() or is_cv_run(p))]
    return sorted(runs, key=lambda p: (_run_time(p), p.name), reverse=True)


def is_cv_run(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / CV_FILE).is_file()


def default_model_run(runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> Path | None:
    """The run `export` takes when told none (and `test` names in its hint): the newest (:func:`_run_time`)
    cross-validation run or finished run with a best.pt; None when there is none."""
    return next((r for r in list_runs(runs_dir) if is_cv_run(r)
                 or ((weights_dir(r) / "best.pt").is_file() and unfinished(r) is None)), None)


def run_status(run_dir: str | os.PathLike[str]) -> dict:
    """state.json, where a ``running`` run whose process is gone (killed, crashed) reads ``interrupted``."""
    try:
        state = json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict):
        return {}
    return {**state, "status": "interrupted"} if state.get("status") == "running" and not _alive(state) else state


def _alive(state: dict) -> bool:
    """Whether the process that wrote ``state`` still runs (True when that cannot be told: another host, no pid)."""
    pid = state.get("pid")
    if not isinstance(pid, int) or state.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_config(run_dir: str | os.PathLike[str]) -> dict:
    """The run's config.json as a mapping ({} when absent or unreadable)."""
    try:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def write_status(run_dir: str | os.PathLike[str], status: str, epoch: int, epochs: int) -> None:
    write_json(Path(run_dir) / STATE_FILE, {"status": status, "epoch": epoch, "epochs": epochs, "pid": os.getpid(),
                                            "host": socket.gethostname()})


def unfinished(run_dir: str | os.PathLike[str]) -> str | None:
    """"interrupted at epoch 2 of 5" (or "still running ...") for a run that did not finish, else None. A run
    without state.json (older, or weights copied in) counts as finished."""
    state = run_status(run_dir)
    if state.get("status") not in ("interrupted", "running"):
        return None
    where = f"epoch {state.get('epoch', '?')} of {state.get('epochs', '?')}"
    return f"interrupted at {where}" if state["status"] == "interrupted" else f"still running ({where})"


def newest_run(runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR, weights: str = "best.pt", *,
               finished_only: bool = False, skipped: list[str] | None = None) -> Path:
    """The newest run folder that has ``weights/<weights>``; with ``finished_only`` the newest that finished (its
    best.pt calibrated, its threshold chosen), the unfinished ones passed over named in ``skipped``."""
    passed: list[str] = []
    for run in list_runs(runs_dir):
        if not (weights_dir(run) / weights).is_file():
            continue
        why = unfinished(run) if finished_only else None
        if why is None:
            if skipped is not None:
                skipped.extend(passed)
            return run
        passed.append(f"{run.name} ({why})")
    if passed:
        raise CheckpointError(f"no finished run under {runs_dir}/: {'; '.join(passed)}. An unfinished run's "
                              "best.pt was never calibrated (temperature scaling, threshold policy): finish it with "
                              f"`train --resume {passed[0].split(' (')[0]}`, or export it as it is by naming it: "
                              f"--checkpoint {passed[0].split(' (')[0]}")
    raise CheckpointError(f"no run with {WEIGHTS_DIR}/{weights} under {runs_dir}/: train one first "
                          "(skinonnx train ...), or pass --checkpoint")


def newest_unfinished_run(runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> Path:
    for run in list_runs(runs_dir):
        if (weights_dir(run) / "last.pt").is_file() and run_status(run).get("status") not in ("finished", "running"):
            return run
    raise CheckpointError(f"no unfinished run under {runs_dir}/ to resume; name one: --resume RUN "
                          "(a name under runs/ or a run folder)")


def resolve_run(spec: str | os.PathLike[str], runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> Path:
    """A run given by folder (``runs/x``, ``/elsewhere/x``) or by name under ``runs_dir``."""
    path = Path(spec)
    for candidate in (path, Path(runs_dir) / path):
        if candidate.is_dir():
            return candidate
    known = [p.name for p in list_runs(runs_dir)][:10]
    raise CheckpointError(f"no run '{spec}' (not a folder, nor a name under {runs_dir}/"
                          + (f"; runs there, newest first: {', '.join(known)})" if known else ", which holds no runs)"))


def resolve_checkpoint(spec: str | os.PathLike[str] | None, runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR,
                       weights: str = "best.pt", *, finished_only: bool = False) -> tuple[Path, str | None]:
    """``--checkpoint``: a file, a run folder or name (-> its weights/best.pt), or None (-> the newest run; with
    ``finished_only``, as `export` asks, the newest finished one: an interrupted run is taken only when named).

    Returns the checkpoint path and, when it was chosen rather than given as a file, a line saying which.
    """
    if spec is not None and Path(spec).is_file():
        return Path(spec), None
    if spec is None:
        skipped: list[str] = []
        run = newest_run(runs_dir, weights, finished_only=finished_only, skipped=skipped)
        cv = next((r for r in list_runs(runs_dir) if is_cv_run(r)), None)
        if cv is not None and _run_time(cv) > _run_time(run):  # one clock: a newer CV run is named, not skipped
            raise CheckpointError(f"the newest run {cv} is a cross-validation run, which holds one model per fold: "
                                  f"pass --checkpoint {cv}/fold-0/{WEIGHTS_DIR}/{weights} (or another fold's)")
        passed = f"; passed over the unfinished {', '.join(skipped)}: name one with --checkpoint to take it as it " \
                 "is" if skipped else ""
        return weights_dir(run) / weights, f"checkpoint: {weights_dir(run) / weights} (the newest " \
                                           f"{'finished ' if finished_only else ''}run; --checkpoint to choose " \
                                           f"another{passed})"
    path = Path(spec)
    if path.suffix == ".pt" or not (path.is_dir() or (Path(runs_dir) / path).is_dir()):
        return path, None  # a missing file: load_checkpoint says so
    run = resolve_run(path, runs_dir)
    return weights_dir(run) / weights, f"checkpoint: {weights_dir(run) / weights} (run {run.name})"


def claim_run_dir(runs_dir: str | os.PathLike[str], name: str) -> Path:
    """Create ``runs_dir/name`` (else ``name-2``, ``name-3``...) exclusively: two runs never share a folder.

    ``mkdir`` is atomic, so of two processes starting at once (even with the same time-stamp name) each gets its
    own folder. A failed start removes the folder it claimed (see ``loop.fit``).
    """
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        candidate = root / (name if k == 1 else f"{name}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise CheckpointError(f"{root}: no free run folder for '{name}' (tried {name}-2 .. {name}-9999)")
