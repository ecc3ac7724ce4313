"""Data discovery: the three layouts, seeded stratified splits, class names from the data."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from skinonnx.data.layouts import SPLIT_FILE, discover, stratified_split
from skinonnx.errors import DataError


def _img(path: Path, colour: tuple[int, int, int] = (120, 80, 60)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), colour).save(path)
    return path


def _flat(root: Path, n_per_class: int = 25) -> Path:
    for cls in ("benign", "malignant"):
        for i in range(n_per_class):
            _img(root / cls / f"{cls}_{i:03d}.png")
    return root


def test_split_imagefolder_classes_come_from_folders(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        for cls in ("nevus", "melanoma"):
            _img(tmp_path / split / cls / "a.png")
            _img(tmp_path / split / cls / "sub" / "b.JPG")  # recursive, mixed-case extension
    data = discover(tmp_path)
    assert data.layout == "split-imagefolder"
    assert data.classes == ("melanoma", "nevus")  # sorted folder names, not hard-coded
    assert data.positive_class == "nevus"  # no "malignant": the second class is positive by default
    assert discover(tmp_path, positive_class="melanoma").positive_index == 0
    assert data.counts() == {s: {"melanoma": 2, "nevus": 2} for s in ("train", "val", "test")}


def test_flat_folder_gets_a_stratified_split_that_is_saved_and_reused(tmp_path: Path) -> None:
    _flat(tmp_path, 25)
    data = discover(tmp_path, seed=7)
    assert data.layout == "flat-imagefolder"
    counts = data.counts()
    for cls in ("benign", "malignant"):  # 64/16/20 % of 25 per class
        assert (counts["train"][cls], counts["val"][cls], counts["test"][cls]) == (16, 4, 5)
    assert (tmp_path / SPLIT_FILE).is_file()
    # later commands read the saved split, even after new files appear
    _img(tmp_path / "benign" / "zzz_new.png")
    again = discover(tmp_path, seed=7)
    assert again.layout == "index-csv"
    assert {s: [x.path.name for x in v] for s, v in again.splits.items()} == \
        {s: [x.path.name for x in v] for s, v in data.splits.items()}


def test_stratified_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    by_class = {"a": [tmp_path / f"a{i}" for i in range(50)], "b": [tmp_path / f"b{i}" for i in range(30)]}
    one, two, other = (stratified_split(by_class, seed=s) for s in (1, 1, 2))
    assert one == two and one != other
    all_paths = [p for items in one.values() for p, _ in items]
    assert len(all_paths) == len(set(all_paths)) == 80


def test_index_csv_layout(tmp_path: Path) -> None:
    rows = ["path,label,split"]
    for split in ("train", "val", "test"):
        for cls in ("benign", "malignant"):
            _img(tmp_path / "imgs" / f"{split}_{cls}.png")
            rows.append(f"imgs/{split}_{cls}.png,{cls},{split}")
    (tmp_path / "index.csv").write_text("\n".join(rows) + "\n")
    for target in (tmp_path, tmp_path / "index.csv"):
        data = discover(target)
        assert data.layout == "index-csv" and data.classes == ("benign", "malignant")
        assert data.counts()["val"] == {"benign": 1, "malignant": 1}


def test_index_csv_wins_over_a_train_folder_beside_it_and_the_layout_is_named(tmp_path: Path) -> None:
    """A user's index.csv declares the splits; a stray train/ folder beside it (no val/) is not a split layout."""
    rows = ["path,label,split"]
    for split in ("train", "val", "test"):
        for cls in ("benign", "malignant"):
            _img(tmp_path / "train" / cls / f"{split}.png")  # every image lives under train/, the CSV splits them
            rows.append(f"train/{cls}/{split}.png,{cls},{split}")
    (tmp_path / "index.csv").write_text("\n".join(rows) + "\n")
    data = discover(tmp_path)
    assert data.layout == "index-csv" and data.counts()["val"] == {"benign": 1, "malignant": 1}
    assert data.notes == [f"data {tmp_path}: index-csv layout (index.csv wins over the split folders ['train'])"]
    (tmp_path / "index.csv").unlink()  # without it the folder is read as split folders, and says so
    assert discover(tmp_path).notes[0].startswith(f"data {tmp_path}: split-imagefolder layout (missing split")


@pytest.mark.parametrize("n_classes, message", [(1, "single class")])
def test_wrong_number_of_classes_is_a_clear_error(tmp_path: Path, n_classes: int, message: str) -> None:
    for i in range(n_classes):
        for split in ("train", "val"):
            _img(tmp_path / split / f"class{i}" / "x.png")
    with pytest.raises(DataError, match=message):
        discover(tmp_path)


def test_real_isic_layout(real_data: Path) -> None:
    data = discover(real_data)
    assert data.classes == ("benign", "malignant")
    assert data.counts() == {"train": {"benign": 181, "malignant": 181}, "val": {"benign": 45, "malignant": 45},
                             "test": {"benign": 56, "malignant": 56}}
