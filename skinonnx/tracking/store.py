"""Where runs are tracked: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else a SQLite file beside the runs.

Also the one place that names the experiment, the artifact folder of the embedded store and the `mlflow ui`
command that shows it (no MLflow import here)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

DB_NAME = "mlflow.db"  # runs/mlflow.db: the embedded store (no server)
ARTIFACTS = "mlartifacts"  # runs/mlartifacts/: its artifacts (files, logged models)
EXPERIMENT = "skinonnx"  # MLFLOW_EXPERIMENT_NAME overrides it
ENV_URI = "MLFLOW_TRACKING_URI"


def default_uri(runs_dir: str | Path) -> str:
    return f"sqlite:///{(Path(runs_dir).resolve() / DB_NAME).as_posix()}"


def resolve_uri(given: str | None, runs_dir: str | Path) -> str:
    """The tracking URI: the option, the environment, or the embedded SQLite store under ``runs_dir``."""
    return given or os.environ.get(ENV_URI) or default_uri(runs_dir)


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def local_artifact_root(uri: str) -> str | None:
    """Artifacts of an embedded SQLite store go beside it (runs/mlartifacts), never into the working folder;
    a server or other store chooses its own (None)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).parent / ARTIFACTS).resolve().as_uri()


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def ui_command(uri: str) -> str:
    """The command that shows the runs of ``uri`` (printed after a tracked run)."""
    return f"mlflow ui --backend-store-uri {shlex.quote(uri)}"
