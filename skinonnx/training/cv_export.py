"""Loading a finished cross-validation run for export (reads its records, never rewrites them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..hashing import file_sha256
from .cv_oof import score_oof
from .cv_record import CVError, check_complete, fold_dir
from .runs import CV_FILE, is_cv_run


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
    if "oof" not in cv or not cv.get("complete"):  # folds copied together: score them here, write nothing
        cv, summary, _ = score_oof(run_dir)
        cv = {**cv, "oof": summary, "complete": True}
    return CompleteRun(run_dir, cv, done, paths)
