"""Fold assignment (pure, no torch): disjoint and complete, grouped, stratified, seeded; CSV group column."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from skinonnx.data.folds import assign_folds, check_fold_count
from skinonnx.data.layouts import discover
from skinonnx.errors import DataError


def _items(n_pos: int, n_neg: int, group_size: int = 1) -> tuple[list[str], list[int], list[str | None] | None]:
    keys = [f"img{i:03d}" for i in range(n_pos + n_neg)]
    labels = [1] * n_pos + [0] * n_neg
    groups = None if group_size == 1 else [f"lesion{i // group_size}-{labels[i]}" for i in range(len(keys))]
    return keys, labels, groups


def test_folds_cover_every_item_once_and_are_stratified_exactly_without_groups() -> None:
    keys, labels, _ = _items(23, 41)
    folds = assign_folds(keys, labels, None, 5, seed=0)
    assert len(folds) == len(keys) and set(folds) == set(range(5))
    for cls, total in ((1, 23), (0, 41)):
        per_fold = Counter(f for f, y in zip(folds, labels, strict=True) if y == cls)
        assert sum(per_fold.values()) == total
        assert max(per_fold.values()) - min(per_fold.values()) <= 1, per_fold


def test_groups_never_straddle_folds_and_classes_stay_balanced() -> None:
    keys, labels, groups = _items(60, 90, group_size=3)
    # a few big groups make balancing harder
    groups = [("big" + str(i % 2) if i < 12 else g) for i, g in enumerate(groups)]  # type: ignore[union-attr]
    folds = assign_folds(keys, labels, groups, 5, seed=1)
    fold_of_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds, strict=True):
        fold_of_group.setdefault(g, set()).add(f)
    assert all(len(fs) == 1 for fs in fold_of_group.values())
    positives = Counter(f for f, y in zip(folds, labels, strict=True) if y == 1)
    assert max(positives.values()) - min(positives.values()) <= 6  # one big group (6 images) at most off


def test_seeded_reproducible_and_independent_of_input_order() -> None:
    keys, labels, _ = _items(20, 20)
    a = assign_folds(keys, labels, None, 4, seed=7)
    assert a == assign_folds(keys, labels, None, 4, seed=7)
    assert a != assign_folds(keys, labels, None, 4, seed=8)
    order = list(reversed(range(len(keys))))
    b = assign_folds([keys[i] for i in order], [labels[i] for i in order], None, 4, seed=7)
    assert {keys[i]: f for i, f in zip(order, b, strict=True)} == dict(zip(keys, a, strict=True))


@pytest.mark.parametrize(("k", "groups", "message"), [
    (1, None, "at least 2 folds"),
    (6, None, "class 'malignant' has only 5 images"),
    (3, ["g0"] * 3 + ["g1"] * 2 + ["g2"] * 5 + ["g3"] * 5 + ["g4"] * 5,
     "class 'malignant' has only 2 groups with images"),
    (4, ["g0"] * 10 + ["g1"] * 10, "only 2 groups"),
])
def test_impossible_fold_counts_are_one_line_errors(k: int, groups, message: str) -> None:
    labels = [1] * 5 + [0] * 15
    with pytest.raises(DataError, match=message):
        check_fold_count(labels, groups, k, ("benign", "malignant"))


def _csv(root: Path, rows: list[str], header: str = "path,label,split,group") -> Path:
    from tests.badfiles import write_tiny_pngs

    for path, row in zip(write_tiny_pngs(root, len(rows)), rows, strict=True):
        path.rename(root / row.split(",")[0])
    (root / "index.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return root


def test_index_csv_group_column_is_read(tmp_path: Path) -> None:
    root = _csv(tmp_path, ["a.png,benign,train,p1", "b.png,malignant,train,p2", "c.png,benign,val,p3",
                           "d.png,malignant,val,p4", "e.png,benign,test,p5"])
    data = discover(root)
    assert [s.group for s in data.split("train")] == ["p1", "p2"]


def test_empty_group_id_is_an_error_naming_the_line(tmp_path: Path) -> None:
    root = _csv(tmp_path, ["a.png,benign,train,p1", "b.png,malignant,train,", "c.png,benign,val,p3"])
    with pytest.raises(DataError, match=r"index.csv:3: empty group id"):
        discover(root)


def test_group_in_two_splits_is_refused(tmp_path: Path) -> None:
    root = _csv(tmp_path, ["a.png,benign,train,p1", "b.png,malignant,train,p2", "c.png,benign,test,p1"])
    with pytest.raises(DataError, match=r"'p1' in test/train"):
        discover(root)
