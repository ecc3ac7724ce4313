"""`predict`: batch inference on the inputs of :mod:`skinonnx.data.inputs` through ONNX Runtime (no torch).

Jobs are resumable (:mod:`.journal`), can be split with ``--shard i/n`` for a scheduler array, and run
either here (one ONNX Runtime session, decoding in threads) or on Ray Data (:mod:`.ray_predict`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_path, write_json, write_text
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.inputs import collect_inputs, require_pyarrow  # noqa: F401 (collect_inputs: demo.py imports it here)
from ..errors import SkinOnnxError
from ..hashing import file_sha256
from ..overlay import overlay_file_names
from .cam_overlays import CAM_SUFFIX, require_cam, write_cam
from .journal import PART_ROWS, Journal, csv_text, prediction_row
from .runtime import OnnxClassifier


@dataclass
class PredictResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def select_shard(paths: Sequence[Path], shard: tuple[int, int] | None) -> list[Path]:
    """The images of shard ``i`` of ``n`` (0-based), by a hash of the path: the shards partition any input
    list, and an image stays in its shard when files are added or the listing order changes."""
    if shard is None:
        return list(paths)
    index, count = shard
    return [p for p in paths if zlib.crc32(str(p).encode("utf-8", "surrogateescape")) % count == index]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` with 0 <= i < n."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"expected i/n (e.g. 0/4), got '{text}'") from None
    if not (count >= 1 and 0 <= index < count):
        raise ValueError(f"expected 0 <= i < n, got '{text}'")
    return index, count


def job_fingerprint(classifier: OnnxClassifier, threshold: float, max_pixels: int) -> dict[str, Any]:
    """What a journal's rows depend on: a resumed job must not mix in rows of another model or threshold."""
    return {"model_sha256": file_sha256(classifier.path), "threshold": threshold, "max_pixels": max_pixels,
            "classes": list(classifier.contract.classes),
            "preprocessing": classifier.contract.preprocessing.to_dict()}


def run_job(classifier: OnnxClassifier, paths: Sequence[Path], output: Path, *, threshold: float | None = None,
            batch_size: int = 16, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
            part_rows: int = PART_ROWS, ray_options: dict[str, Any] | None = None,
            cam_dir: Path | None = None, echo: Callable[[str], None] = print) -> tuple[PredictResult, Journal]:
    """Predict ``paths`` into the journal of ``output``, skipping what an earlier run finished.

    ``ray_options`` (``address``, ``workers``, ``gpus_per_worker``, ``provider``) runs the job on Ray Data.
    ``cam_dir`` (local engine): also write ``<stem>.cam.png`` heatmaps of the graph's ``cam`` output there
    (column ``cam_overlay``); the model must have that output.
    Returns the result for every path (in input order) and the journal, to remove once the output is written.
    """
    t = classifier.contract.threshold if threshold is None else threshold
    journal = Journal(output, job_fingerprint(classifier, t, max_pixels), part_rows=part_rows,
                      part_format="parquet" if ray_options is not None else "csv", echo=echo)
    keys = [str(p) for p in paths]
    if cam_dir is not None and ray_options is not None:
        raise SkinOnnxError("--cam-dir runs on the local engine only (drop --engine ray)")
    overlays = _overlay_paths(classifier, paths, cam_dir)
    todo = [k for k in keys if k not in journal.done]
    if len(todo) < len(keys):
        echo(f"resuming: {len(keys) - len(todo)} of {len(keys)} images already done (in {journal.dir})")
    try:
        if todo and ray_options is not None:
            from .ray_predict import run_ray_predict

            run_ray_predict(classifier, todo, journal, threshold=t, batch_size=batch_size, max_pixels=max_pixels,
                            progress=progress, echo=echo, **ray_options)
        elif todo:
            for row in _local_rows(classifier, todo, t, overlays, batch_size=batch_size, progress=progress,
                                   max_pixels=max_pixels):
                journal.add([row])
    finally:
        journal.flush()  # also on Ctrl-C / errors: what is done stays done
    return _result(journal.rows_for(keys), overlays), journal


def _result(rows: Iterable[dict[str, Any]], overlays: dict[str, Path]) -> PredictResult:
    """Rows with an ``error`` become skipped entries; the others lose that column and gain ``cam_overlay``."""
    result = PredictResult()
    for row in rows:
        if row["error"]:
            result.skipped.append({"path": row["path"], "problem": row["error"]})
        else:
            result.rows.append({k: v for k, v in row.items() if k != "error"})
            result.rows[-1].update({"cam_overlay": str(overlays[row["path"]])} if overlays else {})
    return result


def _overlay_paths(classifier: OnnxClassifier, paths: Sequence[Path], cam_dir: Path | None) -> dict[str, Path]:
    """``<cam_dir>/<stem>.cam.png`` for each path (empty without ``cam_dir``); the model must have ``cam``."""
    if cam_dir is None:
        return {}
    require_cam(classifier.has_cam, classifier.path)
    return dict(zip([str(p) for p in paths], overlay_file_names(paths, cam_dir, CAM_SUFFIX), strict=True))


def _local_rows(classifier: OnnxClassifier, paths: Sequence[str | Path], threshold: float,
                overlays: dict[str, Path], *, batch_size: int, progress: bool, max_pixels: int
                ) -> Iterator[dict[str, Any]]:
    """Result rows (with ``error``) in input order from this process's session, writing the cam overlays."""
    for pred in classifier.predict_files(paths, batch_size=batch_size, progress=progress, max_pixels=max_pixels,
                                         with_cam=bool(overlays), with_logits=bool(overlays),
                                         with_members=classifier.has_members, threshold=threshold):
        if overlays and pred.ok:
            write_cam(classifier, pred, overlays[pred.path], threshold, max_pixels)
        yield prediction_row(classifier.contract, threshold, pred, n_members=classifier.n_members)


def run_predict(classifier: OnnxClassifier, paths: list[Path], *, threshold: float | None = None,
                batch_size: int = 16, progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
                cam_dir: Path | None = None) -> PredictResult:
    """Classify ``paths``; with ``cam_dir`` also write ``<stem>.cam.png`` overlays of the graph's ``cam``
    output there (column ``cam_overlay``); the model must have that output."""
    t = classifier.contract.threshold if threshold is None else threshold
    overlays = _overlay_paths(classifier, paths, cam_dir)
    return _result(_local_rows(classifier, paths, t, overlays, batch_size=batch_size, progress=progress,
                               max_pixels=max_pixels), overlays)


def write_outputs(result: PredictResult, output: Path, *, provider: str, model: Path) -> None:
    if output.suffix.lower() == ".json":
        write_json(output, {"model": str(model), "provider": provider, "predictions": result.rows,
                            "skipped": result.skipped})
    elif output.suffix.lower() == ".csv":
        fields = [*(result.rows[0] if result.rows else ["path", "prediction"]), "error"]
        skipped = ({"path": bad["path"], "error": bad["problem"]} for bad in result.skipped)
        write_text(output, csv_text([*result.rows, *skipped], fields, "{:.6f}".format))
    elif output.suffix.lower() == ".parquet":  # the CSV's columns, with full-precision floats
        pq = require_pyarrow("--output .parquet")
        import pyarrow as pa

        rows = [{**row, "error": ""} for row in result.rows]
        fields = list(rows[0]) if rows else ["path", "prediction", "error"]
        rows += [{**dict.fromkeys(fields), "path": bad["path"], "prediction": "", "error": bad["problem"]}
                 for bad in result.skipped]
        with atomic_path(output) as tmp:
            pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({f: [] for f in fields}), tmp)
    else:
        raise SkinOnnxError(f"--output must end in .csv, .json or .parquet: {output}")
