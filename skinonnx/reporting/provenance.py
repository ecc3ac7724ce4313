"""Where a model came from: its training run folder, training history, data source and parity record.

Read by the `test` report and the model card; no torch. Everything here is best-effort: a missing
or unreadable record gives ``None`` (the report then says so), never an error, because a
deployed ONNX file is often evaluated far away from the machine that trained it.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..hashing import file_sha256 as sha256_of

PARITY_SCHEMA = "skinonnx-parity-record"
PARITY_SCHEMA_VERSION = 1
RUN_DIR_KEY = "training_run_dir"  # ONNX metadata key written by export
CONFIG_KEY = "training_config"  # ONNX metadata key written by export (JSON)


def json_ready(obj: Any) -> Any:
    """Plain JSON values: NaN/inf -> None, tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if hasattr(obj, "item") and not isinstance(obj, (bytes, bytearray)):  # numpy scalar
        return json_ready(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps_strict(obj: Any) -> str:
    """JSON text any parser accepts (no NaN / Infinity tokens)."""
    return json.dumps(json_ready(obj), indent=2, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- parity record


def parity_record_path(onnx_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.onnx.parity.json`` (beside the model)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".parity.json")


def write_parity_record(onnx_path: str | os.PathLike[str], report: dict[str, Any], *, source: str) -> Path:
    """Save a Comparison.to_dict() (export/checks.py) beside the ONNX file, tied to it by its SHA-256."""
    onnx_path = Path(onnx_path)
    import time

    record = {"schema": PARITY_SCHEMA, "schema_version": PARITY_SCHEMA_VERSION, "onnx_file": onnx_path.name,
              "onnx_sha256": sha256_of(onnx_path), "images": source,
              "checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **report}
    return write_text(parity_record_path(onnx_path), dumps_strict(record))


def read_parity_record(onnx_path: str | os.PathLike[str], onnx_sha256: str) -> dict[str, Any] | None:
    """The parity record of this exact file, or None; a record for other bytes is marked stale."""
    path = parity_record_path(onnx_path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != PARITY_SCHEMA:
        return None
    record["matches_model"] = record.get("onnx_sha256") == onnx_sha256
    return record


# --------------------------------------------------------------------------- training run


def find_run_dir(metadata: Mapping[str, str], explicit: str | os.PathLike[str] | None = None,
                 runs_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """``--run-dir`` if given, else the run folder recorded in the ONNX metadata if it still exists, else a run of
    that name under ``runs_dir`` (``--runs-dir``: the runs folder was moved or copied to another machine)."""
    if explicit is not None:
        return Path(explicit)
    recorded = metadata.get(RUN_DIR_KEY)
    for candidate in ([Path(recorded)] + ([Path(runs_dir) / Path(recorded).name] if runs_dir else [])
                      if recorded else []):
        if candidate.is_dir():
            return candidate
    return None


def read_training_config(run_dir: Path | None, metadata: Mapping[str, str]) -> dict[str, Any] | None:
    """runs/<name>/config.json, else the copy export stores in the ONNX metadata."""
    if run_dir is not None:
        try:
            config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
            if isinstance(config, dict):
                return config
        except (OSError, ValueError):
            pass
    try:
        config = json.loads(metadata.get(CONFIG_KEY, ""))
    except ValueError:
        return None
    return config if isinstance(config, dict) else None


def read_history(run_dir: Path | None) -> list[dict[str, float]] | None:
    """Per-epoch rows of runs/<name>/metrics.csv as floats (unparseable cells -> NaN); None if absent."""
    if run_dir is None:
        return None
    try:
        text = (run_dir / "metrics.csv").read_text(encoding="utf-8")
    except OSError:
        return None
    rows = []
    for row in csv.DictReader(text.splitlines()):
        parsed: dict[str, float] = {}
        for key, value in row.items():
            try:
                parsed[key] = float(value)
            except (TypeError, ValueError):
                parsed[key] = math.nan
        rows.append(parsed)
    return rows or None


# --------------------------------------------------------------------------- data


def data_source_line(root: str | os.PathLike[str]) -> str | None:
    """First non-empty line of the data set's README (Markdown heading marks stripped), if any."""
    root = Path(root)
    folder = root if root.is_dir() else root.parent
    for name in ("README.md", "README.txt", "README"):
        try:
            with open(folder / name, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    text = line.strip().lstrip("#").strip()
                    if text:
                        return text[:300]
        except OSError:
            continue
    return None
