"""Input discovery for `predict` and `explain`: image files, folders, globs and manifests (.csv/.parquet with a
``path`` column). No torch, no ONNX Runtime: a bad path is reported before any model is loaded."""

from __future__ import annotations

import csv
import glob
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DataError, SkinOnnxError
from .images import is_image_file

MANIFEST_SUFFIXES = (".csv", ".parquet")


def collect_inputs(specs: Sequence[str]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand files, folders (recursive, symlinked folders not followed), globs and manifests; keep order, drop
    repeats.

    A named file or folder that does not exist is an error (all of them in one message): a typo must not pass
    as a skipped line; so is finding no image at all. A glob that matches nothing, and unreadable files found
    inside folders, are reported as skipped. Manifest entries are not checked here (an archive can list
    millions): a missing one becomes a skipped row ("file not found") when it is read.
    """
    found: list[Path] = []
    problems: list[dict[str, str]] = []
    missing: list[str] = []
    for spec in specs:
        path = Path(spec)
        if path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
            found.extend(read_manifest(path))
        elif path.is_dir():
            found.extend(list_images(path))
        elif path.exists() or path.is_symlink():
            found.append(path)
        elif glob.has_magic(spec):
            images = _glob_images(spec)
            if not images:
                problems.append({"path": spec, "problem": "glob matched no images"})
            found.extend(images)
        else:
            missing.append(spec)
    if missing:
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise SkinOnnxError(f"not found: {', '.join(missing[:20])}{more}")
    if not found:
        raise SkinOnnxError("no images found in " + ", ".join(specs))
    seen: set[str] = set()
    return [p for p in found if not (os.path.abspath(p) in seen or seen.add(os.path.abspath(p)))], problems


def list_images(folder: Path) -> list[Path]:
    """Images under ``folder``, recursively, sorted; symlinked folders are not followed (no loops)."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if is_image_file(Path(f)))
    return found


def require_pyarrow(purpose: str):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SkinOnnxError(f"{purpose} needs pyarrow: pip install 'skinonnx[scale]'") from None
    return pq


def read_manifest(path: Path) -> list[Path]:
    """Image paths from a manifest's ``path`` column; relative ones are relative to the manifest's folder."""
    if path.suffix.lower() == ".parquet":
        pq = require_pyarrow(f"reading the Parquet manifest {path}")
        try:
            names = pq.read_schema(path).names
            table = pq.read_table(path, columns=["path"]) if "path" in names else None
        except Exception as exc:  # pyarrow's own error types: one clear line
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0][:200]})") from None
        if table is None:
            raise DataError(f"{path}: the manifest has no 'path' column (columns: {names})")
        entries = [str(v) for v in table.column("path").to_pylist() if v not in (None, "")]
    else:
        try:
            with open(path, newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                if "path" not in (reader.fieldnames or []):
                    raise DataError(f"{path}: the manifest has no 'path' column (columns: {reader.fieldnames})")
                entries = [row["path"] for row in reader if row.get("path")]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DataError(f"{path}: not a readable CSV manifest ({exc})") from None
    return [Path(e) if os.path.isabs(e) else path.parent / e for e in entries]


def _glob_images(spec: str) -> list[Path]:
    """Images matching a glob; like folders, ``**`` does not descend into symlinked folders.

    (Python's ``glob`` follows them, so a link loop would list every image ~40 times.)
    """
    literal = Path(*itertools.takewhile(lambda part: not glob.has_magic(part), Path(spec).parts))  # "." for "*.jpg"
    images = []
    for match in sorted(Path(p) for p in glob.glob(spec, recursive=True)):
        if not (match.is_file() and is_image_file(match)):
            continue
        between = [parent for parent in match.parents if parent != literal and literal in parent.parents]
        if not any(parent.is_symlink() for parent in between):
            images.append(match)
    return images
