"""Per-image attributes (sex, age, site, skin type, diagnosis...) for subgroup reports. No torch.

They come from extra columns of the index CSV (``path,label,split[,group],...``; carried on each
:class:`~skinonnx.data.layouts.Sample`) or from a separate attributes CSV with a ``path`` column, paths
relative to that CSV's folder as in an index CSV (e.g. isic-bm's ``sources.csv``, which holds the diagnosis).
Images without a row, and empty cells, count as missing: the subgroup report lists them, never drops them.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from ..errors import DataError

#: columns of an index CSV that are not attributes
INDEX_COLUMNS = frozenset({"path", "label", "split", "group", "exclude"})


def path_key(path: str | os.PathLike[str]) -> str:
    """How attributes are looked up: the absolute, normalised path (no file-system access needed)."""
    return os.path.normcase(os.path.abspath(path))


def read_attributes_csv(csv_path: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """``{path_key: {column: value}}`` from a CSV with a ``path`` column (paths relative to its folder)."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "path" not in columns:
                raise DataError(f"{csv_path}: an attributes CSV needs a 'path' column (found {columns})")
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read attributes CSV ({exc})") from None
    base = csv_path.parent
    table: dict[str, dict[str, str]] = {}
    for line_no, row in enumerate(rows, start=2):
        rel = row.pop("path")
        if not rel:
            raise DataError(f"{csv_path}:{line_no}: empty path")
        key = path_key(base / rel)
        if key in table:
            raise DataError(f"{csv_path}:{line_no}: duplicate path '{rel}'")
        table[key] = row
    return table


class WithAttributes(Protocol):
    """What :func:`attribute_table` needs of a sample (a layouts.Sample; layouts imports this module)."""

    path: Path
    attributes: Mapping[str, str]


def attribute_table(samples: Iterable[WithAttributes], csv_path: str | os.PathLike[str] | None = None
                    ) -> dict[str, dict[str, str]]:
    """``{path_key: {column: value}}`` from the samples' index-CSV columns, then the attributes CSV (whose
    value wins where both have a column)."""
    table: dict[str, dict[str, str]] = {}
    for sample in samples:
        if sample.attributes:
            table[path_key(sample.path)] = dict(sample.attributes)
    if csv_path is not None:
        for key, row in read_attributes_csv(csv_path).items():
            table.setdefault(key, {}).update(row)
    return table


def attribute_columns(tables: Iterable[Mapping[str, Mapping[str, str]]]) -> list[str]:
    """Every column any row of the tables has, in first-seen order."""
    seen: dict[str, None] = {}
    for table in tables:
        for row in table.values():
            seen.update(dict.fromkeys(k for k in row if k not in INDEX_COLUMNS))
    return list(seen)
