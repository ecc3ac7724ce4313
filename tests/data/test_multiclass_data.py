"""Any number of classes on the data side: classes from the data, the malignancy group, and bad K-class input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skinonnx.data.layouts import discover, malignant_indices
from skinonnx.data.synthetic import class_names, generate_dataset
from skinonnx.errors import DataError

from ..badfiles import cli_error, cli_ok, make_imagefolder, rgb_pattern

THREE = {"melanoma": 2, "nevus": 2, "seborrheic_keratosis": 2}
TWO = {"train": {"benign": 2, "malignant": 2}, "val": {"benign": 1, "malignant": 1}}


def _three_class_folders(tmp_path: Path) -> Path:
    return make_imagefolder(tmp_path / "d", {"train": THREE, "val": THREE, "test": THREE})


def _train_fails(data: Path, tmp_path: Path, *extra: str, says: tuple[str, ...]) -> str:
    return cli_error("train", "--data", data, "--weights", "none", "--epochs", "1", "--image-size", "32",
                     "--runs-dir", tmp_path / "runs", "--quiet", *extra, says=says)


def test_three_classes_come_from_the_folders_and_the_group_from_malignant(tmp_path: Path) -> None:
    root = _three_class_folders(tmp_path)
    data = discover(root)
    assert data.classes == ("melanoma", "nevus", "seborrheic_keratosis")
    assert data.positive_index is None and data.malignant == ()
    with pytest.raises(DataError, match=r"3 classes .* --malignant CLASS"):
        data.malignant_group()
    with pytest.raises(DataError, match="no single positive class"):
        _ = data.positive_class
    grouped = discover(root, malignant="seborrheic_keratosis, melanoma")
    assert grouped.malignant_group() == (0, 2)  # sorted class indices
    assert grouped.counts()["train"] == {"melanoma": 2, "nevus": 2, "seborrheic_keratosis": 2}


def test_two_classes_keep_their_positive_class(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", TWO)
    data = discover(root)
    assert data.positive_index == 1 and data.malignant == (1,)
    assert discover(root, malignant="benign").malignant == (0,)
    assert discover(root, positive_class="benign").malignant == (0,)
    with pytest.raises(DataError, match="disagree"):
        discover(root, malignant="benign", positive_class="malignant")


@pytest.mark.parametrize(("names", "message"), [
    ("mel,typo", "'typo' is not one of the data's classes"),
    ("mel,nv,bcc", "names every class"),
])
def test_a_bad_malignancy_group_is_refused(names: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        malignant_indices(["bcc", "mel", "nv"], names)


def test_positive_class_is_for_two_classes() -> None:
    with pytest.raises(DataError, match="--positive-class is for two classes"):
        malignant_indices(["bcc", "mel", "nv"], "mel", positive_class="mel")


def test_a_label_typo_making_a_class_of_one_image_is_named(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(9):
        rgb_pattern(24, 24, i).save(root / "images" / f"{i}.png")
        label = "maligant" if i == 4 else ("benign", "malignant")[i % 2]
        rows.append(f"images/{i}.png,{label},{'train' if i < 6 else 'val'}")
    (root / "index.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    data = discover(root, malignant="malignant")
    assert data.classes == ("benign", "maligant", "malignant")
    assert data.warnings == ["class 'maligant' has a single image (a typo of 'malignant'?): it is trained as a class "
                             "of its own; fix the label or remove the image if it is a mistake"]
    # train says so before its error (the one-image class cannot be in both train and val)
    from ..conftest import run_cli

    out = run_cli("train", "--data", root, "--weights", "none", "--epochs", "1", "--runs-dir", tmp_path / "runs",
                  "--malignant", "malignant", "--quiet", expect=1).output
    assert "warning: class 'maligant' has a single image (a typo of 'malignant'?)" in out
    assert "Error: " in out and "class(es) ['maligant'] have no images in the val split" in out
    assert "Traceback" not in out and not (tmp_path / "runs").exists()


def test_a_class_with_no_training_image_is_refused_before_training(tmp_path: Path) -> None:
    root = tmp_path / "idx"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(8):
        rgb_pattern(24, 24, i).save(root / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,{('a', 'b')[i % 2]},{('train', 'val')[i // 4]}")
    for i in range(8, 10):
        rgb_pattern(24, 24, i).save(root / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,c,test")
    (root / "index.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    _train_fails(root, tmp_path, "--malignant", "c", says=("class(es) ['c'] have no images in the train split",))
    assert not (tmp_path / "runs").exists()
    # cross-validation pools train and val: the class must be in one of them
    _train_fails(root, tmp_path, "--malignant", "c", "--folds", "2", says=("train or val split",))


@pytest.mark.parametrize(("extra", "says"), [
    ((), ("3 classes", "--malignant CLASS")),
    (("--malignant", "nosuch"), ("--malignant: 'nosuch' is not one of the data's classes",)),
    (("--malignant", "melanoma,nevus,seborrheic_keratosis"), ("names every class",)),
    (("--malignant", "melanoma", "--positive-class", "melanoma"), ("--positive-class is for two classes",)),
    (("--malignant", "melanoma", "--class-bias", "oof"), ("--class-bias oof", "needs --folds")),
    (("--malignant", "melanoma", "--class-bias", "val", "--folds", "2"), ("with --folds use --class-bias oof",)),
])
def test_train_refuses_a_bad_k_class_setting(tmp_path: Path, extra: tuple[str, ...], says: tuple[str, ...]) -> None:
    _train_fails(_three_class_folders(tmp_path), tmp_path, *extra, says=says)
    assert not (tmp_path / "runs").exists()


def test_class_bias_is_refused_for_two_classes(tmp_path: Path) -> None:
    root = make_imagefolder(tmp_path / "d", TWO)
    _train_fails(root, tmp_path, "--class-bias", "val", says=("--class-bias val is for more than two classes",))


# --------------------------------------------------------------------------- synthetic --classes K


def test_class_names() -> None:
    assert class_names(2) == ("benign", "malignant")
    assert class_names(3) == ("benign_brown", "benign_red", "malignant_brown")
    seven = class_names(7)
    assert len(seven) == 7 and sum(c.startswith("malignant") for c in seven) == 3
    for bad in (1, 13, True):
        with pytest.raises(ValueError, match="classes must be an integer from 2 to 12"):
            class_names(bad)


def test_synthetic_k_classes_train_as_k_classes(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    said = cli_ok("synthetic", "--out", out, "--classes", "5", "--train", "2", "--val", "1", "--test", "1",
                  "--size", "32", "--quiet")
    assert "--malignant malignant_brown,malignant_red" in said
    data = discover(out, malignant="malignant_brown,malignant_red")
    assert data.classes == class_names(5) and data.malignant == (3, 4)
    assert all(n == 2 for n in data.counts()["train"].values())
    manifest = json.loads((out / "generator.json").read_text())
    assert manifest["classes"] == list(class_names(5))
    assert "`--malignant malignant_brown,malignant_red`" in (out / "README.md").read_text()
    # the same folder regenerated with two classes holds exactly the two classes again
    generate_dataset(out, counts={"train": 2, "val": 1, "test": 1}, size=32, progress=False)
    assert discover(out).classes == ("benign", "malignant")
    assert "classes" not in json.loads((out / "generator.json").read_text())
    cli_error("synthetic", "--out", tmp_path / "x", "--classes", "13", code=2, says=("--classes",))


def test_a_kind_is_its_family_recoloured() -> None:
    import numpy as np

    from skinonnx.data.synthetic import make_lesion

    plain = make_lesion("malignant", 48, np.random.default_rng(5))
    brown = make_lesion("malignant_brown", 48, np.random.default_rng(5))
    red = make_lesion("malignant_red", 48, np.random.default_rng(5))
    assert np.array_equal(np.asarray(plain.image), np.asarray(brown.image)) and brown.label == "malignant_brown"
    assert np.array_equal(plain.mask, red.mask)
    inside = red.mask
    red_px, brown_px = np.asarray(red.image, float)[inside], np.asarray(brown.image, float)[inside]
    assert (red_px[:, 0] - red_px[:, 2]).mean() > (brown_px[:, 0] - brown_px[:, 2]).mean() + 10  # redder lesion


def test_folds_stratify_every_one_of_k_classes_and_keep_groups_together() -> None:
    import numpy as np

    from skinonnx.data.folds import assign_folds, check_fold_count

    rng = np.random.default_rng(0)
    labels = list(rng.choice(7, size=700, p=[0.05, 0.07, 0.11, 0.02, 0.11, 0.6, 0.04]))
    keys = [f"img{i}" for i in range(700)]
    folds = assign_folds(keys, labels, None, 5, seed=1, n_classes=7)
    per_fold = np.zeros((5, 7), int)
    for f, y in zip(folds, labels, strict=True):
        per_fold[f, y] += 1
    assert (per_fold.max(axis=0) - per_fold.min(axis=0) <= 1).all()  # exact stratification, every class
    groups = [f"lesion{i // 3}" for i in range(700)]  # three images per lesion, same label
    labels = [labels[i - i % 3] for i in range(700)]
    folds = assign_folds(keys, labels, groups, 5, seed=1, n_classes=7)
    by_group: dict[str, set[int]] = {}
    for g, f in zip(groups, folds, strict=True):
        by_group.setdefault(g, set()).add(f)
    assert all(len(s) == 1 for s in by_group.values())
    with pytest.raises(DataError, match="class 'x' has only 1 images"):
        check_fold_count([0, 0, 1, 1, 2], None, 2, ["a", "b", "x"])


def test_group_column_names_the_lesion_id(tmp_path: Path) -> None:
    """HAM10000's index has lesion_id, not group: --group-column reads it (split leaks refused, folds grouped)."""
    root = tmp_path / "ham"
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(6):
        rgb_pattern(24, 24, i).save(root / "images" / f"{i}.png")
        rows.append(f"images/{i}.png,{('nv', 'mel', 'bcc')[i % 3]},{'train' if i < 4 else 'val'},HAM_{i // 2}")
    (root / "index.csv").write_text("path,label,split,lesion_id\n" + "\n".join(rows) + "\n")
    assert discover(root).split("train")[0].group is None  # by default the column is only an attribute
    data = discover(root, group_column="lesion_id")
    assert [s.group for s in data.split("train")] == ["HAM_0", "HAM_0", "HAM_1", "HAM_1"]
    leaky = root / "index.csv"
    leaky.write_text(leaky.read_text().replace("images/3.png,nv,train,HAM_1", "images/3.png,nv,train,HAM_2"))
    with pytest.raises(DataError, match=r"'HAM_2' in train/val"):
        discover(root, group_column="lesion_id")
    with pytest.raises(DataError, match="--group-column patient: no such column"):
        discover(root, group_column="patient")
    with pytest.raises(DataError, match="is an image folder, not an index CSV"):
        discover(_three_class_folders(tmp_path), group_column="lesion_id")
