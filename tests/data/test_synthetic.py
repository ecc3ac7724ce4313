"""Tests for the deterministic synthetic dermoscopy data set (skinonnx.data.synthetic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinonnx.data.synthetic import (
    CLASSES,
    SPLITS,
    SyntheticLesion,
    generate_dataset,
    make_lesion,
)

SMALL = {"train": 3, "val": 1, "test": 2}
N_STATS = 20


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _lesions(label: str, n: int = N_STATS, size: int = 96) -> list[SyntheticLesion]:
    return [make_lesion(label, size, np.random.default_rng([123, i])) for i in range(n)]


@pytest.fixture(scope="module")
def samples() -> dict[str, list[SyntheticLesion]]:
    return {label: _lesions(label) for label in CLASSES}


# --------------------------------------------------------------------------- make_lesion


def test_make_lesion_types_and_shapes() -> None:
    lesion = make_lesion("malignant", 64, np.random.default_rng(0))
    assert lesion.label == "malignant"
    assert lesion.image.mode == "RGB" and lesion.image.size == (64, 64)
    assert lesion.mask.dtype == bool and lesion.mask.shape == (64, 64)


@pytest.mark.parametrize("label", ["", "Benign", "melanoma", None])
def test_invalid_label_raises(label: object) -> None:
    with pytest.raises(ValueError):
        make_lesion(label, 64, np.random.default_rng(0))  # type: ignore[arg-type]


def test_invalid_size_raises() -> None:
    with pytest.raises(ValueError):
        make_lesion("benign", 8, np.random.default_rng(0))


def test_same_rng_state_same_pixels() -> None:
    a = make_lesion("malignant", 64, np.random.default_rng([1, 2, 3]))
    b = make_lesion("malignant", 64, np.random.default_rng([1, 2, 3]))
    c = make_lesion("malignant", 64, np.random.default_rng([1, 2, 4]))
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert np.array_equal(a.mask, b.mask)
    assert not np.array_equal(np.asarray(a.image), np.asarray(c.image))


def test_masks_non_empty_and_inside_image(samples: dict[str, list[SyntheticLesion]]) -> None:
    for lesions in samples.values():
        for lesion in lesions:
            m = lesion.mask
            assert m.sum() > 0.02 * m.size
            # the lesion never touches the image border
            assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def test_mask_matches_pixels(samples: dict[str, list[SyntheticLesion]]) -> None:
    """Pixels inside the mask are darker than the skin around it."""
    for lesions in samples.values():
        for lesion in lesions:
            grey = np.asarray(lesion.image.convert("L"), dtype=float)
            m = lesion.mask
            ring = _dilate(m, 6) & ~_dilate(m, 3)
            assert grey[m].mean() < grey[ring].mean() - 10


def test_malignant_larger_on_average(samples: dict[str, list[SyntheticLesion]]) -> None:
    area = {label: np.mean([lesion.mask.mean() for lesion in ls]) for label, ls in samples.items()}
    assert area["malignant"] > 1.5 * area["benign"]


def test_sizes_overlap_a_little() -> None:
    """Diameter alone must not be a perfect separator over a larger sample."""
    b = [lesion.mask.sum() for lesion in _lesions("benign", 60, 64)]
    m = [lesion.mask.sum() for lesion in _lesions("malignant", 60, 64)]
    assert max(b) > min(m)


def test_malignant_more_colourful(samples: dict[str, list[SyntheticLesion]]) -> None:
    def colour_var(lesion: SyntheticLesion) -> float:
        px = np.asarray(lesion.image, dtype=float)[lesion.mask]
        return float(px.var(axis=0).sum())

    def clusters(lesion: SyntheticLesion) -> int:
        px = np.asarray(lesion.image, dtype=np.int64)[lesion.mask] // 40  # coarse RGB bins
        _, n = np.unique(px[:, 0] * 49 + px[:, 1] * 7 + px[:, 2], return_counts=True)
        return int((n >= 0.03 * len(px)).sum())

    var = {label: np.mean([colour_var(x) for x in ls]) for label, ls in samples.items()}
    bins = {label: np.mean([clusters(x) for x in ls]) for label, ls in samples.items()}
    assert var["malignant"] > 3 * var["benign"]
    assert bins["malignant"] > bins["benign"] + 1


def test_malignant_more_asymmetric(samples: dict[str, list[SyntheticLesion]]) -> None:
    asym = {label: np.mean([_mirror_iou(x.mask) for x in ls]) for label, ls in samples.items()}
    assert asym["benign"] > 0.9
    assert asym["malignant"] < asym["benign"] - 0.08


def test_malignant_border_more_irregular(samples: dict[str, list[SyntheticLesion]]) -> None:
    """Perimeter^2 / area (compactness) is ~4*pi for a disc and grows with a ragged border."""
    def compactness(m: np.ndarray) -> float:
        edge = m & ~_erode(m)
        return float(edge.sum() ** 2 / m.sum())

    c = {label: np.mean([compactness(x.mask) for x in ls]) for label, ls in samples.items()}
    assert c["malignant"] > 1.2 * c["benign"]


# --------------------------------------------------------------------------- generate_dataset


def test_determinism_bytes_identical(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", counts=SMALL, size=64, seed=3, progress=False)
    b = generate_dataset(tmp_path / "b", counts=SMALL, size=64, seed=3, progress=False)
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and len(fa) > 0
    assert fa == fb
    assert a["counts"] == b["counts"]

    generate_dataset(tmp_path / "c", counts=SMALL, size=64, seed=4, progress=False)
    fc = _files(tmp_path / "c")
    assert fc.keys() == fa.keys()
    pngs = [k for k in fa if k.endswith(".png")]
    assert all(fa[k] != fc[k] for k in pngs)


def test_images_depend_only_on_seed_split_label_index(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "few", counts={"train": 2}, size=64, seed=9, progress=False)
    generate_dataset(tmp_path / "more", counts={"train": 5, "val": 2}, size=64, seed=9, progress=False)
    few, more = _files(tmp_path / "few"), _files(tmp_path / "more")
    shared = [k for k in few if k.endswith(".png")]
    assert len(shared) == 8  # 2 images + 2 masks per class
    assert all(few[k] == more[k] for k in shared)
    # and the same pixels come out of make_lesion with the documented seed sequence
    direct = make_lesion("malignant", 64, np.random.default_rng([9, SPLITS.index("train"), 1, 1]))
    on_disk = Image.open(tmp_path / "few" / "train" / "malignant" / "train_malignant_0001.png")
    assert np.array_equal(np.asarray(on_disk), np.asarray(direct.image))


def test_default_counts_and_layout(tmp_path: Path) -> None:
    root = tmp_path / "data"
    summary = generate_dataset(root, size=48, seed=0, progress=False)
    expected = {"train": 32, "val": 8, "test": 10}
    assert summary["root"] == str(root)
    assert summary["size"] == 48 and summary["seed"] == 0
    assert summary["counts"] == {s: {label: n for label in CLASSES} for s, n in expected.items()}
    for split, n in expected.items():
        for label in CLASSES:
            imgs = sorted((root / split / label).iterdir())
            assert [p.name for p in imgs] == [f"{split}_{label}_{i:04d}.png" for i in range(n)]
            for p in imgs[:2]:
                with Image.open(p) as im:
                    assert im.format == "PNG" and im.mode == "RGB" and im.size == (48, 48)
                with Image.open(root / "masks" / split / label / p.name) as mk:
                    assert mk.mode == "L" and mk.size == (48, 48)
                    values = set(np.unique(np.asarray(mk)).tolist())
                    assert values == {0, 255}
    readme = (root / "README.md").read_text(encoding="utf-8")
    for needle in ("synthetic", "not medical data", "skinonnx.data.synthetic", "Seed: 0", "ABCD"):
        assert needle.lower() in readme.lower()
    params = json.loads((root / "generator.json").read_text(encoding="utf-8"))
    assert params["seed"] == 0 and params["size"] == 48
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]  # no temp files left


def test_per_class_splits_64_16_20(tmp_path: Path) -> None:
    s = generate_dataset(tmp_path, per_class={"benign": 25, "malignant": 10}, size=32, progress=False)
    assert s["counts"] == {"train": {"benign": 16, "malignant": 6},
                           "val": {"benign": 4, "malignant": 2},
                           "test": {"benign": 5, "malignant": 2}}
    assert len(list((tmp_path / "train" / "benign").glob("*.png"))) == 16


@pytest.mark.parametrize("kwargs", [
    {"counts": {"training": 3}},
    {"counts": {"train": -1}},
    {"per_class": {"melanoma": 3}},
    {"per_class": {"benign": 3}, "counts": {"train": 1}},
    {"size": 4},
    {"seed": -1},
])
def test_invalid_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate_dataset(tmp_path, progress=False, **kwargs)


def test_idempotent_second_call_writes_nothing(tmp_path: Path) -> None:
    first = generate_dataset(tmp_path, counts=SMALL, size=48, seed=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = generate_dataset(tmp_path, counts=SMALL, size=48, seed=1, progress=False)
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    assert again == first
    assert before == after


def test_incomplete_or_changed_dataset_is_regenerated(tmp_path: Path) -> None:
    generate_dataset(tmp_path, counts=SMALL, size=48, seed=1, progress=False)
    reference = _files(tmp_path)
    victim = tmp_path / "val" / "benign" / "val_benign_0000.png"
    victim.unlink()
    generate_dataset(tmp_path, counts=SMALL, size=48, seed=1, progress=False)
    assert _files(tmp_path) == reference

    # smaller counts: leftovers from the larger run must not stay in the ImageFolder tree
    generate_dataset(tmp_path, counts={"train": 1}, size=48, seed=1, progress=False)
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.png"))
    assert left == sorted([f"train/{c}/train_{c}_0000.png" for c in CLASSES]
                          + [f"masks/train/{c}/train_{c}_0000.png" for c in CLASSES])


# --------------------------------------------------------------------------- helpers


def _shift_or(m: np.ndarray, k: int, op: str) -> np.ndarray:
    out = m.copy()
    padded = np.pad(m, k, constant_values=(op == "and"))
    h, w = m.shape
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            view = padded[k + dy:k + dy + h, k + dx:k + dx + w]
            out = (out | view) if op == "or" else (out & view)
    return out


def _dilate(m: np.ndarray, k: int) -> np.ndarray:
    return _shift_or(m, k, "or")


def _erode(m: np.ndarray) -> np.ndarray:
    return _shift_or(m, 1, "and")


def _mirror_iou(mask: np.ndarray) -> float:
    """Mean IoU of the mask with its left-right, up-down and 180-degree mirrors about its centroid."""
    ys, xs = np.nonzero(mask)
    cy, cx = round(ys.mean()), round(xs.mean())
    h, w = mask.shape
    pad = max(h, w)
    centred = np.zeros((2 * pad + 1, 2 * pad + 1), bool)  # odd size: index ``pad`` is the centre
    centred[pad - cy:pad - cy + h, pad - cx:pad - cx + w] = mask
    ious = []
    for flipped in (centred[:, ::-1], centred[::-1, :], centred[::-1, ::-1]):
        ious.append((centred & flipped).sum() / (centred | flipped).sum())
    return float(np.mean(ious))


def test_synthetic_command_writes_the_same_set_as_the_library(tmp_path: Path) -> None:
    from skinonnx.data.layouts import discover

    from ..conftest import run_cli

    result = run_cli("synthetic", "--out", tmp_path / "cli", "--train", "3", "--val", "2", "--test", "1",
                     "--size", "48", "--seed", "5", "--quiet")
    assert "'train': {'benign': 3, 'malignant': 3}" in result.output
    found = discover(tmp_path / "cli", write_split_file=False)
    assert [len(found.split(s)) for s in ("train", "val", "test")] == [6, 4, 2]
    samples = [s for split in found.splits.values() for s in split]
    assert {Image.open(s.path).size for s in samples} == {(48, 48)}
    generate_dataset(tmp_path / "lib", counts={"train": 3, "val": 2, "test": 1}, size=48, seed=5, progress=False)
    for sample in samples:
        twin = tmp_path / "lib" / sample.path.relative_to(tmp_path / "cli")
        assert twin.read_bytes() == sample.path.read_bytes()
