"""The `audit` command: audit.json, audit.html (+ audit_files/) and exclude.txt in the output folder.

Nothing in the data is changed. Per-image results are cached by content (:mod:`skinonnx.data.image_cache`),
so a second audit, or `train`'s leakage check after an audit, decodes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .. import __version__
from ..atomic import ensure_writable_dir, write_json, write_text
from ..data.exclusions import apply_exclusions, read_exclude_list
from ..data.image_cache import ImageCache
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import discover
from .findings import SETTINGS, audit_images, label_issue_findings, suggested_exclusions, summary
from .label_issues import read_out_of_fold
from .report_page import shown_paths, write_page

FORMAT = "skinonnx-audit"
VERSION = 1


def run_audit(data_path: str | Path, output: Path, *, run_dir: Path | None = None, exclude_list: Path | None = None,
              cache: ImageCache | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Audit the data set at ``data_path`` (and a CV run's label issues); write the report; return audit.json."""
    t0 = time.perf_counter()
    data = discover(data_path, write_split_file=False)
    if exclude_list is not None:
        data = apply_exclusions(data, read_exclude_list(exclude_list), str(exclude_list))
    oof = read_out_of_fold(run_dir) if run_dir is not None else None  # refuse a bad run before the long part
    ensure_writable_dir(output)
    cache = cache if cache is not None else ImageCache.default()
    total = sum(len(v) for v in data.splits.values())
    with tqdm(total=total, desc="audit", unit="img", disable=not progress, leave=False) as bar:
        items, findings = audit_images(data, cache, max_pixels=max_pixels, progress=bar.update)
    findings["label_issues"] = label_issue_findings(oof, data) if oof is not None else None
    findings["suggested_exclusions"] = suggested_exclusions(findings)
    doc: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "skinonnx": __version__,
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "data": {"root": str(data.root), "layout": data.layout, "classes": list(data.classes),
                 "counts": data.counts(), "notes": data.notes},
        "settings": SETTINGS,
        "cache": {"path": str(cache.path) if cache.path else None, "hits": cache.hits, "misses": cache.misses,
                  "note": cache.note},
        "seconds": None,
        "summary": summary(items, findings),
        **findings,
    }
    shown = shown_paths(doc)
    by_rel = {it.rel: it.path for it in items}
    root = data.root.resolve()
    paths = {rel: by_rel.get(rel, root / rel) for rel in shown}
    write_page(doc, output, paths, max_pixels)
    write_text(output / "exclude.txt", "# suggested by `audit`: one image of each duplicate group is kept; "
               "unreadable files\n" + "".join(f"{p}\n" for p in doc["suggested_exclusions"]))
    doc["seconds"] = round(time.perf_counter() - t0, 2)
    write_json(output / "audit.json", doc)
    _print_summary(doc, output, echo)
    return doc


def _print_summary(doc: dict[str, Any], output: Path, echo: Callable[[str], None]) -> None:
    s = doc["summary"]
    for note in doc["data"]["notes"]:  # e.g. files an index CSV does not list: not audited
        echo(f"note: {note}")
    echo(f"audited {s['images']} images in {doc['seconds']} s (cache: {doc['cache']['hits']} hits)")
    leaks = [p for p in doc["pairs"] if p["leakage"]]
    if leaks:
        echo(f"LEAKAGE: {len(leaks)} pair(s) of images in two splits, e.g. "
             + "; ".join(f"{p['b']['path']} = {p['a']['path']}" for p in leaks[:3]))
    echo(f"duplicate pairs {s['duplicate_pairs']} (exact {s['exact_pairs']}, conflicting labels "
         f"{s['conflicting_pairs']}), unreadable {s['unreadable']}, quality "
         f"{', '.join(f'{k} {v}' for k, v in s['quality'].items()) or 'no issues'}"
         + ("" if s["label_issues_flagged"] is None else f", likely label errors {s['label_issues_flagged']}"))
    if doc["cache"]["note"]:
        echo(doc["cache"]["note"])
    echo(f"report: {output / 'audit.html'}  (suggested exclusions: {output / 'exclude.txt'})")
