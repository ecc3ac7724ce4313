"""A run folder's link to its MLflow run: ``tracking.json`` (store URI and run id), so a resumed run, `export`
and `test` write to the same MLflow run."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_json
from .store import ui_command
from .tracker import Tracker, _stderr

RECORD = "tracking.json"


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    """``tracking.json`` of a run folder, or None (never tracked, or unreadable)."""
    try:
        record = json.loads((Path(run_dir) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("run_id") and record.get("uri") else None


def open_training_run(run_dir: str | Path, uri: str, *, run_name: str, params: Mapping[str, Any],
                      parent: Tracker | str | None = None, tags: Mapping[str, str] | None = None,
                      warn: Callable[[str], None] = _stderr) -> Tracker:
    """The MLflow run of a run folder: resumed when ``tracking.json`` names one in the same store, else new
    (its settings logged as parameters and its id written to ``tracking.json`` once the store answers)."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    resumed = record["run_id"] if record and record["uri"] == uri else None

    def remember(run_id: str) -> None:
        write_json(run_dir / RECORD, {"uri": uri, "run_id": run_id, "ui": ui_command(uri)})

    tracker = Tracker(uri, run_name=run_name, run_id=resumed, parent=parent,
                      tags={"skinonnx.run_dir": str(run_dir.resolve()), **(tags or {})}, warn=warn,
                      on_start=None if resumed else remember)
    if not resumed:
        tracker.log_params(params)
    return tracker
