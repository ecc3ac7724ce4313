"""Resumable predictions: finished rows kept as part files beside the output until it is written.

``predict -o reports/x.csv`` keeps what it has finished in ``reports/x.csv.parts/`` (one atomically
written part file per ``part_rows`` images, CSV from the local engine, Parquet from Ray), with
``job.json`` naming the model (SHA-256) and threshold. Run the same command again after a crash or
a kill and it reads the parts, skips those images and predicts the rest; the final output is written
from all rows, each image exactly once, and the folder removed. Parts made by another model or
threshold are discarded, never mixed in. Both engines read each other's parts.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_json, write_text
from ..data.inputs import require_pyarrow
from .contract import (
    IN_DISTRIBUTION_OUTPUT,
    LABEL_OUTPUT,
    MALIGNANT_OUTPUT,
    OOD_OUTPUT,
    P_MALIGNANT_OUTPUT,
    ModelContract,
)
from .decision import label_text
from .runtime import Prediction

PART_ROWS = 1000


def prediction_row(contract: ModelContract, threshold: float, pred: Prediction, *, n_members: int = 0
                   ) -> dict[str, Any]:
    """One result row, the same for both engines: path, prediction, p_<class>..., threshold, error; for a fold
    ensemble (``n_members`` > 0) also the members' spread (:func:`member_columns`, empty for unreadable files).

    ``prediction`` is the graph's decision as text (:func:`~skinonnx.deploy.decision.label_text`): the class, or
    "not assessed: unlike the training images" for an image that is not in distribution (its probabilities stay
    in their columns for auditing; they are not a decision). A model with an OOD score adds ``ood_score`` and
    ``in_distribution``. A model of more than two classes adds, after the probabilities, ``p_malignant`` (the
    malignancy group's), ``malignant`` (at the threshold) and ``label`` (the decided class, before any refusal),
    and ``in_distribution`` always (two-class rows stay as they were)."""
    row: dict[str, Any] = {"path": pred.path, "prediction": ""}
    probabilities = pred.probabilities
    if probabilities is not None and pred.label is not None:
        row["prediction"] = label_text(contract, pred.label, bool(pred.in_distribution))
    row.update({f"p_{name}": None if probabilities is None else float(probabilities[i])
                for i, name in enumerate(contract.classes)})
    if contract.multiclass:
        row[P_MALIGNANT_OUTPUT] = pred.p_malignant if probabilities is not None else None
        row[MALIGNANT_OUTPUT] = pred.malignant if probabilities is not None else None
        row[LABEL_OUTPUT] = contract.classes[pred.label] if probabilities is not None and pred.label is not None \
            else None
    row["threshold"] = threshold
    if contract.multiclass and contract.ood_threshold is None:
        row[IN_DISTRIBUTION_OUTPUT] = None if probabilities is None else bool(pred.in_distribution)
    if contract.ood_threshold is not None:
        row[OOD_OUTPUT] = pred.ood_score
        row["in_distribution"] = None if probabilities is None else bool(pred.in_distribution)
    if n_members:
        row.update(member_columns(pred.members) if pred.members is not None else dict.fromkeys(
            ["member_std", "member_min", "member_max", *(f"p_member_{k}" for k in range(n_members))]))
    row["error"] = pred.error or ""
    return row


def member_columns(members: Sequence[float]) -> dict[str, float]:
    """``member_std`` (population sd of the members' positive-class probabilities), min, max, and each member's."""
    values = [float(v) for v in members]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return {"member_std": std, "member_min": min(values), "member_max": max(values),
            **{f"p_member_{k}": v for k, v in enumerate(values)}}


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


class Journal:
    """The finished rows of one job; ``add`` them as they come, ``flush`` writes a part file.

    Rows all have the same keys (:func:`skinonnx.deploy.predict.prediction_row`): path, prediction,
    p_<class>..., threshold, error ('' for a prediction, the reason for a skipped file).
    """

    def __init__(self, output: Path, fingerprint: dict[str, Any], *, part_rows: int = PART_ROWS,
                 part_format: str = "csv", echo: Callable[[str], None] = print) -> None:
        self.dir = parts_dir(output)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it reads back from job.json
        self.part_rows = part_rows
        self.part_format = part_format
        self.done: dict[str, dict[str, Any]] = {}
        self._buffer: list[dict[str, Any]] = []
        self._fields: list[str] | None = None
        self._load(echo)

    def _load(self, echo: Callable[[str], None]) -> None:
        job = self.dir / "job.json"
        if self.dir.is_dir():
            try:
                previous = json.loads(job.read_text())
            except (OSError, ValueError):
                previous = None
            if previous != self.fingerprint:
                echo(f"note: discarding the partial results in {self.dir}: another model, threshold or "
                     "settings made them")
                shutil.rmtree(self.dir)
            else:
                for part in sorted(self.dir.glob("part-*")):
                    for row in _read_part(part):
                        self.done.setdefault(str(row["path"]), row)
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(job, self.fingerprint)

    def add(self, rows: Iterable[dict[str, Any]]) -> int:
        """Record rows of images not yet done (a retried batch adds nothing twice); returns how many were new."""
        new = 0
        for row in rows:
            key = str(row["path"])
            if key in self.done:
                continue
            self.done[key] = row
            self._buffer.append(row)
            new += 1
        if len(self._buffer) >= self.part_rows:
            self.flush()
        return new

    def flush(self) -> None:
        if not self._buffer:
            return
        name = self.dir / f"part-{uuid.uuid4().hex[:16]}.{self.part_format}"
        if self.part_format == "parquet":
            pq = require_pyarrow("Parquet part files")
            import pyarrow as pa

            with atomic_path(name) as tmp:
                pq.write_table(pa.Table.from_pylist(self._buffer), tmp)
        else:
            write_text(name, csv_text(self._buffer, list(self._buffer[0])))
        self._buffer = []

    def rows_for(self, paths: Sequence[str]) -> list[dict[str, Any]]:
        """The rows of ``paths`` in that order (all must be done)."""
        return [self.done[p] for p in paths]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def csv_text(rows: Iterable[dict[str, Any]], fields: Sequence[str], number: Callable[[float], str] = repr) -> str:
    """The one CSV writer of result rows (part files, predict's CSV, the report's predictions.csv): floats by
    ``number`` (``repr`` keeps every bit: a resumed job equals an uninterrupted one), keys a row lacks empty."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: number(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _read_part(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        rows = require_pyarrow("reading Parquet part files").read_table(path).to_pylist()
    else:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    return [{k: _typed(k, v) for k, v in row.items()} for row in rows]


def _typed(key: str, value: Any) -> Any:
    """A part file's value as the engine produced it (CSV parts hold strings)."""
    if value in ("", None):
        return None
    if key.startswith("p_") or key in ("threshold", OOD_OUTPUT):
        return float(value)
    if key in (IN_DISTRIBUTION_OUTPUT, MALIGNANT_OUTPUT):
        return value in (True, "True")
    return value
