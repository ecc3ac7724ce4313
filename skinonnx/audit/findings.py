"""What the audit finds in a data set: duplicates (leakage first), unreadable and poor images, likely label errors.

Pure computation into plain dicts (the content of ``audit.json``); :mod:`.report_page` draws them and
:mod:`.run` writes the files. Every path is relative to the data root, as an exclusion list names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.duplicates import HASH_KEY, NEAR_DISTANCE, duplicate_pairs, fingerprint_files
from ..data.image_cache import ImageCache
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import SPLITS, LabeledData
from .label_issues import OutOfFold, rank_label_issues
from .quality import EXPLAIN, QUALITY_KEY, TINY_SIDE, find_quality_issues, measure

SPLIT_ORDER = {s: i for i, s in enumerate(SPLITS)}
LABEL_ISSUES_SHOWN = 100  # ranked images listed in audit.json and the page (all flagged ones at least)


@dataclass(frozen=True)
class Item:
    path: Path
    rel: str
    split: str
    label: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.rel, "split": self.split, "label": self.label}


def items_of(data: LabeledData) -> list[Item]:
    root = data.root.resolve()
    out = []
    for split in sorted(data.splits, key=lambda s: SPLIT_ORDER.get(s, 9)):
        for s in data.splits[split]:
            resolved = s.path.resolve()
            rel = resolved.relative_to(root).as_posix() if resolved.is_relative_to(root) else str(s.path)
            out.append(Item(s.path, rel, split, data.classes[s.label]))
    return out


def audit_images(data: LabeledData, cache: ImageCache, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 max_distance: int = NEAR_DISTANCE, progress: Callable[[int], None] | None = None
                 ) -> tuple[list[Item], dict[str, Any]]:
    """Duplicates, unreadable files and quality issues of every image in ``data`` (one decode per new file)."""
    items = items_of(data)
    prints, records, problems = fingerprint_files([it.path for it in items], cache, max_pixels=max_pixels,
                                                  extra=measure, extra_key=QUALITY_KEY, progress=progress)
    pairs = []
    for p in duplicate_pairs([it.path for it in items], prints, cache, max_distance=max_distance,
                             max_pixels=max_pixels):
        a, b = items[p.first], items[p.second]
        if SPLIT_ORDER.get(b.split, 9) < SPLIT_ORDER.get(a.split, 9):
            a, b = b, a
        pairs.append({"a": a.as_dict(), "b": b.as_dict(), "distance": p.distance, "exact": p.exact,
                      "leakage": a.split != b.split, "conflict": a.label != b.label})
    pairs.sort(key=lambda q: (not q["leakage"], not q["conflict"], q["distance"], q["a"]["path"], q["b"]["path"]))
    cache.save()
    quality = [{**items[i].as_dict(), "issues": found}
               for i, found in enumerate(find_quality_issues(records)) if found]
    unreadable = [{**items[i].as_dict(), "problem": problem} for i, problem in sorted(problems.items())]
    return items, {"pairs": pairs, "quality": quality, "unreadable": unreadable}


def label_issue_findings(oof: OutOfFold, data: LabeledData, shown: int = LABEL_ISSUES_SHOWN) -> dict[str, Any]:
    """cleanlab's ranking of the run's pooled images, the flagged ones and the next most suspicious up to ``shown``."""
    ranked = rank_label_issues(oof.labels, oof.probabilities)
    flagged = sum(r.flagged for r in ranked)
    split_of = {it.rel: it.split for it in items_of(data)}
    rows = []
    for rank, r in enumerate(ranked[:max(shown, flagged)], start=1):
        given = oof.classes[int(oof.labels[r.index])]
        other = oof.classes[oof.suggested(r.index)]
        rows.append({"rank": rank, "path": oof.paths[r.index], "split": split_of.get(oof.paths[r.index], ""),
                     "label": given, "suggested": other, "quality": round(r.quality, 4), "flagged": r.flagged})
    missing = sum(1 for p in oof.paths if p not in split_of)
    return {"run": str(oof.run_dir), "images": len(oof.paths), "flagged": flagged, "ranked": rows,
            "not_in_data": missing,
            "method": "cleanlab.filter.find_label_issues (confident learning) on out-of-fold probabilities; "
                      "ranked by self-confidence (the probability of the given label)"}


def suggested_exclusions(findings: dict[str, Any]) -> list[str]:
    """Duplicates to drop (each group keeps one image: the earliest split, then the first path) and unreadables.

    Conflicting labels, poor quality and label issues are left to the reader (checkboxes on the page).
    """
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    split_of: dict[str, str] = {}
    for pair in findings["pairs"]:
        a, b = pair["a"], pair["b"]
        split_of[a["path"]], split_of[b["path"]] = a["split"], b["split"]
        ra, rb = find(a["path"]), find(b["path"])
        if ra != rb:
            parent[rb] = ra
    groups: dict[str, list[str]] = {}
    for path in parent:
        groups.setdefault(find(path), []).append(path)
    drop = set()
    for members in groups.values():
        keep = min(members, key=lambda p: (SPLIT_ORDER.get(split_of[p], 9), p))
        drop.update(m for m in members if m != keep)
    drop.update(u["path"] for u in findings["unreadable"])
    return sorted(drop)


def summary(items: list[Item], findings: dict[str, Any]) -> dict[str, Any]:
    pairs = findings["pairs"]
    quality_counts = {issue: sum(1 for q in findings["quality"] if issue in q["issues"]) for issue in EXPLAIN}
    labels = findings.get("label_issues")
    return {
        "images": len(items),
        "unreadable": len(findings["unreadable"]),
        "leakage_pairs": sum(p["leakage"] for p in pairs),
        "leakage_by_split": {f"{s}-train": sum(1 for p in pairs if p["leakage"] and p["a"]["split"] == "train"
                                               and p["b"]["split"] == s) for s in ("val", "test")},
        "duplicate_pairs": len(pairs),
        "exact_pairs": sum(p["exact"] for p in pairs),
        "conflicting_pairs": sum(p["conflict"] for p in pairs),
        "quality": {k: v for k, v in quality_counts.items() if v},
        "label_issues_flagged": None if labels is None else labels["flagged"],
        "suggested_exclusions": len(findings["suggested_exclusions"]),
    }


SETTINGS = {"hash": f"phash 256-bit, 8 orientations + 5 centre crops ({HASH_KEY})",
            "near_distance_bits": NEAR_DISTANCE, "tiny_side_px": TINY_SIDE,
            "quality": "CleanVision 0.3 properties and default thresholds (dark, light, low information, aspect "
                       "ratio); blurry: log Laplacian variance 3 robust SDs below the median; tiny: side < 56 px"}
