"""Leaving images out without moving files: an exclusion list (``--exclude-list FILE``) or an index CSV's
``exclude`` column. The audit page (``audit.html``) helps write the list; ``reports/audit/exclude.txt`` is its
suggestion.

A list holds one path per line, relative to the data root (as the audit names them) or absolute; blank
lines and ``#`` comments are ignored. A listed path that is not in the data is reported in the data's
notes (the file may have been deleted since), not an error.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import DataError
from .layouts import LabeledData

MAX_NAMED = 3


def read_exclude_list(path: str | os.PathLike[str]) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"exclusion list not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the exclusion list ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def apply_exclusions(data: LabeledData, listed: list[str], source: str) -> LabeledData:
    """``data`` without the listed images; a note says how many were left out and which entries matched nothing."""
    root = data.root.resolve()
    wanted = {(Path(p) if Path(p).is_absolute() else root / p).resolve(): p for p in listed}
    splits, matched = {}, set()
    for name, samples in data.splits.items():
        kept = []
        for s in samples:
            key = s.path.resolve()
            if key in wanted:
                matched.add(key)
            else:
                kept.append(s)
        splits[name] = kept
    notes = list(data.notes)
    notes.append(f"excluded {len(matched)} image(s) listed in {source}")
    unknown = [wanted[k] for k in wanted if k not in matched]
    if unknown:
        more = f" and {len(unknown) - MAX_NAMED} more" if len(unknown) > MAX_NAMED else ""
        notes.append(f"{len(unknown)} path(s) in {source} are not in the data: "
                     f"{', '.join(unknown[:MAX_NAMED])}{more}")
    return dataclasses.replace(data, splits=splits, notes=notes)
