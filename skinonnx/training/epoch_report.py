"""After each epoch: an ETA for the whole run and the training curves in the run folder (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..atomic import write_bytes

CURVES_EVERY_S = 60.0  # drawing the PNG takes ~2 s: at most once a minute during training, and at the end


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def run_eta(epoch_seconds: Sequence[float], epochs_left: int) -> str:
    """Time left for the remaining epochs at the mean pace of this session's epochs (early stop may cut it)."""
    if epochs_left <= 0 or not epoch_seconds:
        return "run ETA 0m00s"
    pace = sum(epoch_seconds) / len(epoch_seconds)
    return f"run ETA {format_duration(pace * epochs_left)} ({epochs_left} epochs left at {pace:.1f} s/epoch)"


def write_training_curves(run_dir: Path, history: Sequence[dict[str, float]], best_epoch: float | None) -> Path:
    """runs/<name>/training_curves.png (atomic), drawn at most every CURVES_EVERY_S and when training ends."""
    from ..evaluation.plots import plot_training_curves

    path = Path(run_dir) / "training_curves.png"
    write_bytes(path, plot_training_curves(history, best_epoch))
    return path
