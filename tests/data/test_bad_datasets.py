"""Bad data set layouts and index files: a one-line DataError naming the problem, from the real commands.

``train`` validates the data before building a network, so these runs take well under a second.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from skinonnx.data.layouts import discover
from skinonnx.errors import DataError

from ..badfiles import cli_error, cli_ok, make_imagefolder, rgb_pattern, tiny_onnx, write_tiny_pngs

TWO = {"benign": 3, "malignant": 3}


def _train_fails(data: Path, tmp_path: Path, *says: str, extra: tuple[str, ...] = ()) -> str:
    return cli_error("train", "--data", data, "--weights", "none", "--epochs", "1", "--image-size", "32",
                     "--checkpoint-dir", tmp_path / "ck", "--runs-dir", tmp_path / "runs", "--quiet", *extra,
                     says=says)


def _write_index(root: Path, rows: list[str], header: str = "path,label,split", name: str = "index.csv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def _index_root(tmp_path: Path) -> Path:
    """images/{a,b,c,d}.png under a data root, for index CSV cases."""
    root = tmp_path / "idx"
    (root / "images").mkdir(parents=True)
    for i, name in enumerate("abcd"):
        rgb_pattern(24, 24, i).save(root / "images" / f"{name}.png")
    return root


# --- folder layouts ---------------------------------------------------------------------------


def _only_test_split(t: Path) -> Path:
    return make_imagefolder(t / "d", {"test": TWO})


def _no_val_split(t: Path) -> Path:
    return make_imagefolder(t / "d", {"train": TWO, "test": TWO})


def _empty_class_folder(t: Path) -> Path:
    root = make_imagefolder(t / "d", {"train": {"benign": 3}, "val": TWO})
    (root / "train" / "malignant").mkdir()
    return root


def _class_folder_without_images(t: Path) -> Path:
    root = make_imagefolder(t / "d", {"train": {"benign": 3}, "val": TWO})
    (root / "train" / "malignant").mkdir()
    (root / "train" / "malignant" / "notes.txt").write_text("to do")
    (root / "train" / "malignant" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


def _single_class(t: Path) -> Path:
    return make_imagefolder(t / "d", {"train": {"benign": 3}, "val": {"benign": 2}})


def _three_classes(t: Path) -> Path:
    three = {"benign": 2, "malignant": 2, "unknown": 2}
    return make_imagefolder(t / "d", {"train": three, "val": three})


def _classes_differ_between_splits(t: Path) -> Path:
    return make_imagefolder(t / "d", {"train": TWO, "val": {"benign": 2, "melanoma": 2}})


def _flat_images_no_classes(t: Path) -> Path:
    write_tiny_pngs(t / "d", 3, size=24)
    return t / "d"


def _missing_path(t: Path) -> Path:
    return t / "does_not_exist"


def _not_a_csv(t: Path) -> Path:
    (t / "data.txt").write_text("hello")
    return t / "data.txt"


def _train_split_without_a_class(t: Path) -> Path:
    """Both classes exist overall, but every malignant training image is unreadable."""
    root = make_imagefolder(t / "d", {"train": {"benign": 3}, "val": TWO})
    (root / "train" / "malignant").mkdir()
    (root / "train" / "malignant" / "broken.jpg").write_text("<html>")
    return root


LAYOUTS: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("missing train split", _only_test_split, ("'train' split is missing",)),
    ("missing val split", _no_val_split, ("'val' split is missing",)),
    ("empty class folder", _empty_class_folder, ("malignant: class folder has no images",)),
    ("class folder without images", _class_folder_without_images, ("class folder has no images",)),
    ("single class", _single_class, ("single class ['benign']", "two are needed")),
    ("three classes without --malignant", _three_classes, ("3 classes", "--malignant CLASS")),
    ("class folders differ between splits", _classes_differ_between_splits, ("class folders differ",)),
    ("images but no class folders", _flat_images_no_classes, ("no class folders",)),
    ("data path missing", _missing_path, ("data path not found",)),
    ("data path is not a folder or CSV", _not_a_csv, ("expected a folder or an index CSV",)),
    ("a class with no readable training image", _train_split_without_a_class,
     ("train split has no usable images of class ['malignant']",)),
]


@pytest.mark.parametrize(("builder", "says"), [(b, s) for _, b, s in LAYOUTS], ids=[n for n, _, _ in LAYOUTS])
def test_train_refuses_bad_layout(tmp_path: Path, builder, says) -> None:
    _train_fails(builder(tmp_path), tmp_path, *says)
    assert not list((tmp_path / "ck").glob("*.pt"))


def test_test_command_needs_a_test_split(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO})
    cli_error("test", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--data", data, "--output", tmp_path / "r",
              says=("'test' split is missing",))


def test_positive_class_must_exist(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO})
    _train_fails(data, tmp_path, "positive class 'melanoma' is not one of", extra=("--positive-class", "melanoma"))


def test_hidden_folders_are_not_classes(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO})
    for split in ("train", "val"):
        junk = root / split / ".ipynb_checkpoints"
        junk.mkdir()
        rgb_pattern().save(junk / "copy.png")
    data = discover(root)
    assert data.classes == ("benign", "malignant")
    assert all(".ipynb_checkpoints" not in str(s.path) for s in data.split("train"))


def test_symlink_loop_in_a_class_folder_is_not_followed(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO})
    (root / "train" / "benign" / "loop").symlink_to(root / "train", target_is_directory=True)
    (root / "train" / "benign" / "self.png").symlink_to(root / "train" / "benign" / "self.png")
    data = discover(root)
    paths = [s.path for s in data.split("train")]
    assert len(paths) == len(set(paths)) == 7  # 6 images + the looping file link (refused when decoded)
    assert not any("loop" in p.parts for p in paths)


def test_mixed_case_extensions_are_images(tmp_path: Path) -> None:
    root = tmp_path / "d"
    names = ["a.JPG", "b.Jpeg", "c.PNG", "d.png", "e.TIF", "f.WebP"]
    for split in ("train", "val"):
        for cls in ("benign", "malignant"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, name in enumerate(names):
                rgb_pattern(24, 24, i).save(folder / name)
            (folder / "readme.TXT").write_text("not an image")
    data = discover(root)
    assert sorted(p.path.name for p in data.split("train") if p.label == 0) == sorted(names)


@pytest.mark.slow
def test_train_skips_and_reports_bad_images(tmp_path: Path) -> None:
    """One real epoch on a set with odd extensions and broken files: trains, names each skipped file."""
    root = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO}, size=40)
    (root / "train" / "benign" / "benign_00.png").rename(root / "train" / "benign" / "upper.PNG")
    broken = {root / "train" / "malignant" / "empty.jpg": "empty file",
              root / "train" / "benign" / "page.JPG": "not a supported image",
              root / "val" / "malignant" / "tiny.png": "at least 8x8"}
    for path in broken:
        if path.name == "page.JPG":
            path.write_text("<html>")
        elif path.name == "tiny.png":
            rgb_pattern(1, 1).save(path)
        else:
            path.write_bytes(b"")
    output = cli_ok("train", "--data", root, "--weights", "none", "--epochs", "1", "--image-size", "32",
                    "--batch-size", "4", "--checkpoint-dir", tmp_path / "ck", "--runs-dir", tmp_path / "runs",
                    "--name", "r", "--quiet")
    for path, word in broken.items():
        assert any(line.startswith(f"skipped {path}: ") and word in line for line in output.splitlines())
    assert "6 train / 6 val images" in output  # upper.PNG counted, 3 broken files not
    assert (tmp_path / "ck" / "best.pt").is_file()


# --- index CSV --------------------------------------------------------------------------------


def _csv_case(rows: list[str], header: str = "path,label,split"):
    def build(t: Path) -> Path:
        return _write_index(_index_root(t), rows, header)
    return build


def _csv_symlink_out(t: Path) -> Path:
    root = _index_root(t)
    outside = t / "outside.png"
    rgb_pattern().save(outside)
    (root / "images" / "link.png").symlink_to(outside)
    return _write_index(root, ["images/a.png,benign,train", "images/link.png,malignant,train"])


def _csv_not_utf8(t: Path) -> Path:
    root = _index_root(t)
    (root / "index.csv").write_bytes("path,label,split\nimages/a.png,b\xe9nin,train\n".encode("latin-1"))
    return root / "index.csv"


GOOD_ROWS = ["images/a.png,benign,train", "images/b.png,malignant,train",
             "images/c.png,benign,val", "images/d.png,malignant,val"]
CSV_CASES: list[tuple[str, Callable[[Path], Path], tuple[str, ...]]] = [
    ("missing columns", _csv_case(["images/a.png,benign"], "path,label"), ("missing column(s) ['split']",)),
    ("missing label column", _csv_case(["images/a.png"], "file"), ("missing column(s) ['path', 'label', 'split']",)),
    ("missing files", _csv_case([*GOOD_ROWS, "images/gone.png,benign,test", "images/lost.png,malignant,test"]),
     ("2 bad row(s)", "index.csv:6: listed file not found 'images/gone.png'", "index.csv:7:")),
    ("duplicate paths", _csv_case([*GOOD_ROWS, "images/./a.png,malignant,test"]),
     ("index.csv:6", "duplicate path 'images/./a.png'")),
    ("absolute path", _csv_case([*GOOD_ROWS, "/etc/passwd,benign,test"]),
     ("absolute path '/etc/passwd' refused",)),
    ("Windows drive path", _csv_case([*GOOD_ROWS, "C:\\photos\\x.png,benign,test"]), ("absolute path",)),
    ("../ escaping the root", _csv_case([*GOOD_ROWS, "../../../etc/passwd,benign,test"]),
     ("escapes the data root", "refused")),
    ("../ inside a path", _csv_case([*GOOD_ROWS, "images/../../outside.png,benign,test"]), ("escapes the data root",)),
    ("symlink pointing outside the root", _csv_symlink_out, ("images/link.png' escapes the data root",)),
    ("unknown split", _csv_case(["images/a.png,benign,training"]), ("split 'training' is not one of",)),
    ("empty path", _csv_case([",benign,train"]), ("index.csv:2: empty path or label",)),
    ("header only", _csv_case([]), ("no rows",)),
    ("not UTF-8", _csv_not_utf8, ("cannot read index CSV",)),
]


@pytest.mark.parametrize(("builder", "says"), [(b, s) for _, b, s in CSV_CASES], ids=[n for n, _, _ in CSV_CASES])
def test_train_refuses_bad_index_csv(tmp_path: Path, builder, says) -> None:
    csv_path = builder(tmp_path)
    _train_fails(csv_path, tmp_path, str(csv_path.name), *says)


def test_index_csv_escape_is_refused_before_any_file_is_opened(tmp_path: Path, monkeypatch) -> None:
    secret = tmp_path / "secret.png"
    rgb_pattern().save(secret)
    csv_path = _write_index(_index_root(tmp_path), [*GOOD_ROWS, "../secret.png,benign,test"])
    opened = []
    import skinonnx.data.images as images

    monkeypatch.setattr(images.Image, "open", lambda *a, **k: opened.append(a) or None)
    with pytest.raises(DataError, match="escapes the data root"):
        discover(csv_path)
    assert opened == []


def test_index_csv_accepted_forms(tmp_path: Path) -> None:
    """BOM, spaces, extra columns, a harmless '..' and the folder form (ROOT/index.csv) all work."""
    root = _index_root(tmp_path)
    (root / "index.csv").write_text(
        "\ufeffpath , label , split , note\n"
        "images/a.png, benign ,train,x\nimages/sub/../b.png,malignant,train,\n"
        "images/c.png,benign,val,\nimages/d.png,malignant,val,\n", encoding="utf-8")
    for target in (root, root / "index.csv"):
        data = discover(target)
        assert data.layout == "index-csv" and data.classes == ("benign", "malignant")
        assert [s.path for s in data.split("train")] == [root.resolve() / "images" / n for n in ("a.png", "b.png")]
        assert all(s.path.is_file() for split in data.splits.values() for s in split)


def test_test_command_reads_an_index_csv(tmp_path: Path) -> None:
    root = _index_root(tmp_path)
    csv_path = _write_index(root, ["images/a.png,benign,test", "images/b.png,malignant,test",
                                   "images/c.png,benign,test", "images/d.png,malignant,test"])
    out = tmp_path / "r"
    cli_ok("test", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--data", csv_path, "--output", out, "--quiet")
    assert len(list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))) == 4


def test_index_csv_reports_every_bad_row_at_once_in_line_order(tmp_path: Path) -> None:
    """Before: one problem per run, not in line order, and a label typo had no line number."""
    from skinonnx.data.layouts import MAX_REPORTED_ROWS, discover
    from skinonnx.errors import DataError

    root = _index_root(tmp_path)
    rgb_pattern(24, 24, 5).save(root / "images" / "e.png")
    csv_path = _write_index(root, [*GOOD_ROWS[:3], "images/e.png,maligant,val", "images/gone.png,benign,test",
                                   "images/a.png,benign,test", ",benign,train", "images/d.png,malignant,testing"])
    with pytest.raises(DataError) as info:
        discover(csv_path)
    message = info.value.message
    lines = [int(n) for n in re.findall(r"index\.csv:(\d+):", message)]
    assert lines == [5, 6, 7, 8, 9]  # all five, in file order (the label typo is found last, listed first)
    assert "index.csv:5: label 'maligant' appears only here (a typo of 'malignant'?)" in message
    assert "index.csv:6: listed file not found 'images/gone.png'" in message
    assert "index.csv:7: duplicate path 'images/a.png' (first on line 2)" in message
    assert "index.csv:8: empty path or label" in message and "index.csv:9: split 'testing'" in message
    assert "found 3 label(s)" in message and "5 bad row(s)" in message

    many = _write_index(tmp_path / "many", [f"gone{i}.png,benign,train" for i in range(30)])
    with pytest.raises(DataError) as info:
        discover(many)
    assert "30 bad row(s)" in info.value.message and f"and {30 - MAX_REPORTED_ROWS} more" in info.value.message
    assert len(re.findall(r"index\.csv:\d+:", info.value.message)) == MAX_REPORTED_ROWS
