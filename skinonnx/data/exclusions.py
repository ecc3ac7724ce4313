"""Leaving images out without moving files: an exclusion list (``--exclude-list FILE``) or an index CSV's
``exclude`` column. The audit page (``audit.html``) helps write the list; ``reports/audit/exclude.txt`` is its
suggestion.

A list holds one path per line, relative to the data root (as the audit names them) or absolute; blank
lines and ``#`` comments are ignored. A listed path that is not in the data is reported in the data's
notes (the file may have been deleted since), not an error.

The exclusions are part of a run: :func:`apply_exclusions` records what it left out in
``LabeledData.exclusions`` (paths relative to the data root, per split, and the list's ``#`` comments as the
reason); training writes that record into config.json and the checkpoint's config, and every later command on
the model (export's OOD fit and parity images, ``test``, ``quantize``) leaves the same images out with
:func:`apply_recorded`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError
from .layouts import LabeledData

MAX_NAMED = 3


def _read(path: str | os.PathLike[str]) -> list[str]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"exclusion list not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the exclusion list ({exc})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_exclude_list(path: str | os.PathLike[str]) -> list[str]:
    return [line for line in _read(path) if not line.startswith("#")]


def exclusion_reason(path: str | os.PathLike[str]) -> str:
    """The list's ``#`` comment lines, joined: why these images are left out (the audit writes one)."""
    return " ".join(line.lstrip("#").strip() for line in _read(path) if line.startswith("#")).strip()


def apply_exclusions(data: LabeledData, listed: list[str], source: str, reason: str = "") -> LabeledData:
    """``data`` without the listed images; a note says how many were left out and which entries matched nothing.
    ``data.exclusions`` records what was left out (added to any earlier record)."""
    root = data.root.resolve()
    wanted = {(Path(p) if Path(p).is_absolute() else root / p).resolve(): p for p in listed}
    splits, matched, by_split = {}, set(), {}
    for name, samples in data.splits.items():
        kept = []
        for s in samples:
            key = s.path.resolve()
            if key in wanted:
                matched.add(key)
                by_split.setdefault(name, []).append(key.relative_to(root).as_posix() if key.is_relative_to(root)
                                                     else str(key))
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
    record = _merged(data.exclusions, {"lists": [{"source": source, "reason": reason, "n": len(matched)}],
                                       "paths": {k: sorted(v) for k, v in sorted(by_split.items())}})
    return dataclasses.replace(data, splits=splits, notes=notes, exclusions=record)


def _merged(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if not old:
        new["n"] = sum(len(v) for v in new["paths"].values())
        return new
    paths = {k: sorted({*old["paths"].get(k, []), *new["paths"].get(k, [])})
             for k in sorted({*old["paths"], *new["paths"]})}
    return {"lists": [*old["lists"], *new["lists"]], "paths": paths, "n": sum(len(v) for v in paths.values())}


def recorded_exclusions(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A run's exclusion record (config.json or a checkpoint's config, key ``exclusions``), if any."""
    record = (config or {}).get("exclusions")
    return record if isinstance(record, dict) and record.get("paths") else None


def apply_recorded(data: LabeledData, config: Mapping[str, Any] | None) -> LabeledData:
    """``data`` without the images the model's run excluded (paths relative to the data root, as recorded)."""
    record = recorded_exclusions(config)
    if record is None:
        return data
    listed = [p for paths in record["paths"].values() for p in paths]
    sources = ", ".join(str(x.get("source")) for x in record.get("lists", [])) or "?"
    out = apply_exclusions(data, listed, f"{sources} (recorded with the model's training run)",
                           reason="; ".join(x.get("reason", "") for x in record.get("lists", []) if x.get("reason")))
    if out.exclusions:
        out.exclusions["lists"][-1].update(source=sources, recorded=True)
    return out


def describe(record: Mapping[str, Any] | None) -> str | None:
    """One sentence for the model card and reports: how many images were left out, from which list, why."""
    if not record or not record.get("n"):
        return None
    splits = ", ".join(f"{len(v)} {k}" for k, v in record["paths"].items())
    lists = "; ".join(f"`{x.get('source')}`" + (" (recorded with the model's training run)" if x.get("recorded")
                                                 else "") + (f": {x['reason']}" if x.get("reason") else "")
                      for x in record.get("lists", []))
    return f"{record['n']} image(s) left out ({splits}) as listed in {lists}"
