"""`train --track`: a run's MLflow run (or a fold's child run), fed from the epoch loop; torch-free.

Everything is handed to :class:`~skinonnx.tracking.tracker.Tracker`, which writes from a background thread, so a
slow or dead store never slows or stops training (it warns once)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import TrainConfig

RUN_FILES = ("config.json", "metrics.csv", "training_curves.png", "MODEL_CARD.md", "state.json")


def start(cfg: TrainConfig, echo: Callable[[str], None], *, parent=None, run_dir: Path | None = None,
          run_name: str | None = None, tags: Mapping[str, str] | None = None):
    """The run's tracker (resumed when its folder's tracking.json names one in the same store), or None when
    the run is not tracked."""
    if not cfg.tracked:
        return None
    from ..tracking.run_record import open_training_run
    from ..tracking.store import resolve_uri

    uri = getattr(parent, "uri", None) or resolve_uri(cfg.tracking_uri, cfg.runs_dir)  # a child: its parent's store
    params = {k: v for k, v in cfg.to_dict().items() if k not in ("progress", "tracking_uri", "track")}
    return open_training_run(run_dir or cfg.run_dir, uri, run_name=run_name or cfg.name, params=params,
                             parent=parent, tags={"skinonnx.kind": "train", **(tags or {})}, warn=echo)


def log_epoch(tracker, row: Mapping[str, Any], epoch: int) -> None:
    if tracker is not None:
        tracker.log_metrics(row, step=epoch)


def finish(tracker, run_dir: Path, status: str, summary: Mapping[str, Any] | None = None,
           echo: Callable[[str], None] = print) -> None:
    """Final metrics and the run folder's files (config, metrics.csv, curves, model card), then end the run and
    print how to look at it."""
    if tracker is None:
        return
    if summary:
        tracker.log_metrics(summary)
    tracker.log_files([Path(run_dir) / name for name in RUN_FILES])
    if tracker.finish(status) and status == "FINISHED":
        from ..tracking.store import ui_command

        echo(f"tracked in MLflow (run {tracker.run_id()}); see it with: {ui_command(tracker.uri)}")
