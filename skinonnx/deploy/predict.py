"""`predict`: batch inference on files, folders and globs through ONNX Runtime (no torch)."""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import write_json, write_text
from ..data.images import DEFAULT_MAX_PIXELS, is_image_file
from ..data.layouts import _list_images
from ..errors import SkinOnnxError
from .runtime import OnnxClassifier


@dataclass
class PredictResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def collect_inputs(specs: Iterable[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand files, folders (recursive, symlinked folders not followed) and globs; keep order, drop repeats."""
    found: list[Path] = []
    problems: list[dict[str, str]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found.extend(_list_images(path))
        elif path.exists() or path.is_symlink():
            found.append(path)
        elif glob.has_magic(spec):
            images = _glob_images(spec)
            if not images:
                problems.append({"path": spec, "problem": "glob matched no images"})
            found.extend(images)
        else:
            problems.append({"path": spec, "problem": "file not found"})
    seen, unique = set(), []
    for p in found:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique, problems


def _glob_images(spec: str) -> list[Path]:
    """Images matching a glob; like folders, ``**`` does not descend into symlinked folders.

    (Python's ``glob`` follows them, so a link loop would list every image ~40 times.)
    """
    literal = Path(*_literal_parts(spec))  # Path() is "." for a pattern like "*.jpg"
    images = []
    for match in sorted(Path(p) for p in glob.glob(spec, recursive=True)):
        if not (match.is_file() and is_image_file(match)):
            continue
        between = [parent for parent in match.parents if parent != literal and literal in parent.parents]
        if not any(parent.is_symlink() for parent in between):
            images.append(match)
    return images


def _literal_parts(spec: str) -> list[str]:
    """The leading path components of ``spec`` that contain no glob characters."""
    parts: list[str] = []
    for part in Path(spec).parts:
        if glob.has_magic(part):
            break
        parts.append(part)
    return parts


def run_predict(classifier: OnnxClassifier, paths: list[Path], *, threshold: float | None = None,
                batch_size: int = 16, progress: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> PredictResult:
    contract = classifier.contract
    t = contract.threshold if threshold is None else threshold
    pos = contract.positive_index
    result = PredictResult()
    for pred in classifier.predict_files(paths, batch_size=batch_size, progress=progress,
                                           max_pixels=max_pixels, with_members=classifier.has_members):
        if not pred.ok:
            result.skipped.append({"path": pred.path, "problem": str(pred.error)})
            continue
        prob = float(pred.probabilities[pos])
        row: dict[str, Any] = {"path": pred.path,
                               "prediction": contract.classes[pos] if prob >= t else contract.classes[1 - pos]}
        row.update({f"p_{name}": float(pred.probabilities[i]) for i, name in enumerate(contract.classes)})
        row["threshold"] = t
        if pred.members is not None:  # fold ensemble: how much its members disagree on this image
            row.update(member_columns(pred.members))
        result.rows.append(row)
    return result


def member_columns(members) -> dict[str, float]:
    """``member_std`` (population sd of the members' positive-class probabilities), min, max, and each member's."""
    values = [float(v) for v in members]
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return {"member_std": std, "member_min": min(values), "member_max": max(values),
            **{f"p_member_{k}": v for k, v in enumerate(values)}}


def write_outputs(result: PredictResult, output: Path, *, provider: str, model: Path) -> None:
    if output.suffix.lower() == ".json":
        write_json(output, {"model": str(model), "provider": provider, "predictions": result.rows,
                            "skipped": result.skipped})
    elif output.suffix.lower() == ".csv":
        fields = list(result.rows[0]) if result.rows else ["path", "prediction"]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[*fields, "error"], lineterminator="\n")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
        for bad in result.skipped:
            writer.writerow({"path": bad["path"], "error": bad["problem"]})
        write_text(output, buf.getvalue())
    else:
        raise SkinOnnxError(f"--output must end in .csv or .json: {output}")
