"""Stratified, grouped K-fold assignment for cross-validation. Pure functions, no torch.

A *group* is a patient or lesion id (the optional ``group`` column of an index CSV); images
without one are their own group. Every group lands in exactly one fold, and each class is
spread over the folds as evenly as the groups allow:

    groups are taken largest first (ties in a seeded random order) and each goes to the fold
    where it brings the per-class counts closest to their targets (total / K); among equally
    good folds, the one with the fewest images, then the lowest index.

Without groups this is exact stratification: per class, fold sizes differ by at most one.
The result depends on the seed and the set of (key, label, group), not on the input order.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..atomic import write_text
from ..errors import DataError
from .layouts import Sample

FOLDS_FILE = "folds.csv"


def _group_keys(keys: Sequence[str], groups: Sequence[str | None] | None) -> list[str]:
    if groups is None:
        return [f"item:{k}" for k in keys]
    return [f"group:{g}" if g is not None else f"item:{k}" for k, g in zip(keys, groups, strict=True)]


def check_fold_count(labels: Sequence[int], groups: Sequence[str | None] | None, k: int,
                     classes: Sequence[str], keys: Sequence[str] | None = None) -> None:
    """Raise :class:`DataError` when ``k`` folds cannot each hold every class (or a group per fold)."""
    if k < 2:
        raise DataError(f"--folds {k}: cross-validation needs at least 2 folds")
    keys = list(keys) if keys is not None else [str(i) for i in range(len(labels))]
    gkeys = _group_keys(keys, groups)
    n_groups = len(set(gkeys))
    if n_groups < k:
        raise DataError(f"--folds {k}: train+val hold only {n_groups} groups; use --folds {n_groups} or fewer")
    for c, name in enumerate(classes):
        with_class = {g for g, y in zip(gkeys, labels, strict=True) if y == c}
        if len(with_class) < k:
            what = "groups with images" if groups is not None and any(g is not None for g in groups) else "images"
            raise DataError(f"--folds {k}: class '{name}' has only {len(with_class)} {what} in train+val, so some "
                            f"fold would have none to validate on; use --folds {max(len(with_class), 1)} or fewer")


def assign_folds(keys: Sequence[str], labels: Sequence[int], groups: Sequence[str | None] | None, k: int, *,
                 seed: int, n_classes: int = 2) -> list[int]:
    """Fold index (0..k-1) for every item; items of one group share a fold. See the module docstring."""
    if len(keys) != len(labels):
        raise ValueError("keys and labels differ in length")
    gkeys = _group_keys(keys, groups)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(gkeys):
        members.setdefault(g, []).append(i)
    names = sorted(members)
    vectors = {g: np.bincount([labels[i] for i in members[g]], minlength=n_classes).astype(float) for g in names}
    order = np.random.default_rng(seed).permutation(len(names))
    ordered = sorted((names[i] for i in order), key=lambda g: -len(members[g]))  # stable: keeps the seeded order
    totals = sum(vectors.values(), np.zeros(n_classes))
    target = totals / k
    counts = np.zeros((k, n_classes))
    fold_of: dict[str, int] = {}
    for g in ordered:
        vec = vectors[g]
        gain = ((counts + vec - target) ** 2).sum(axis=1) - ((counts - target) ** 2).sum(axis=1)
        best = min(range(k), key=lambda f: (round(float(gain[f]), 9), counts[f].sum(), f))
        counts[best] += vec
        fold_of[g] = best
    return [fold_of[g] for g in gkeys]


def _relative(path: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


def write_folds_csv(target: Path, samples: Sequence[Sample], folds: Sequence[int], classes: Sequence[str],
                    base: Path) -> Path:
    """Write the assignment as ``path,label,group,fold`` rows (paths relative to ``base``), sorted by path."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "group", "fold"])
    writer.writerows(sorted((_relative(s.path, base), classes[s.label], s.group or "", f) for s, f in
                            zip(samples, folds, strict=True)))
    return write_text(target, buf.getvalue())


def read_folds_csv(path: Path, base: Path) -> dict[Path, int]:
    """``{resolved image path: fold}`` from a folds.csv (paths relative to ``base``)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        return {(base / r["path"]).resolve(): int(r["fold"]) for r in rows}
    except (OSError, KeyError, ValueError, TypeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read the fold assignment ({exc})") from None
