"""Exact and near duplicates on real computations: planted copies are found, distinct images never paired."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinonnx.audit.planted import ALTERATIONS, alter
from skinonnx.data.duplicates import NEAR_DISTANCE, duplicate_pairs, fingerprint_files, leakage, perceptual_hashes
from skinonnx.data.image_cache import ImageCache
from skinonnx.data.layouts import discover

PIL_ORIENTATIONS = (None, Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM,
                    Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270,
                    Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE)


def _train_image(root: Path, index: int = 3) -> Path:
    return sorted((root / "train" / "malignant").glob("*.png"))[index]


def test_hashes_are_imagehash_phash_of_each_orientation(generated: Path) -> None:
    imagehash = pytest.importorskip("imagehash")
    image = Image.open(_train_image(generated)).convert("RGB")
    ours = perceptual_hashes(image)
    thumb = image.convert("L").resize((64, 64), Image.Resampling.LANCZOS)
    for k, transpose in enumerate(PIL_ORIENTATIONS):
        reference = imagehash.phash(thumb if transpose is None else thumb.transpose(transpose), hash_size=16)
        bits = np.unpackbits(ours[k].astype(">u8").view(np.uint8)).astype(bool)
        assert np.array_equal(bits, reference.hash.flatten()), f"orientation {k}"


def test_distinct_generated_images_are_never_paired(generated: Path) -> None:
    data = discover(generated, write_split_file=False)
    paths = [s.path for split in data.splits.values() for s in split]
    prints, _, problems = fingerprint_files(paths)
    assert len(paths) == 52 and not problems
    assert duplicate_pairs(paths, prints) == []
    assert leakage(data) == []


@pytest.mark.parametrize("how", sorted(ALTERATIONS))
def test_a_planted_copy_in_test_is_leakage(fresh_copy: Path, how: str) -> None:
    """exact, re-encoded, PNG, resized, upscaled, squashed, cropped, flipped, rotated: each found, alone."""
    source = _train_image(fresh_copy)
    raw, suffix = alter(source, how)
    copy = fresh_copy / "test" / "malignant" / f"copy{suffix}"
    copy.write_bytes(raw)
    found = leakage(discover(fresh_copy, write_split_file=False))
    assert [(p.train_path, p.other_path, p.other_split) for p in found] == [(source, copy, "test")]
    identical = raw == source.read_bytes()  # "exact", and "png" of a PNG source
    assert found[0].exact == identical and (how != "exact" or identical)
    assert (found[0].distance == 0) if identical else 0 <= found[0].distance <= NEAR_DISTANCE
    assert not found[0].labels_differ


def test_a_copy_under_the_other_label_is_a_conflict(fresh_copy: Path) -> None:
    source = _train_image(fresh_copy)
    raw, suffix = alter(source, "flipped")
    (fresh_copy / "val" / "benign" / f"copy{suffix}").write_bytes(raw)
    (found,) = leakage(discover(fresh_copy, write_split_file=False))
    assert found.other_split == "val" and found.labels_differ
    assert "labels differ" in found.describe(fresh_copy)


def test_the_cache_makes_the_second_look_decode_nothing(fresh_copy: Path, image_cache_dir: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    source = _train_image(fresh_copy)
    raw, suffix = alter(source, "rotated")
    (fresh_copy / "test" / "malignant" / f"copy{suffix}").write_bytes(raw)
    data = discover(fresh_copy, write_split_file=False)
    first = leakage(data, ImageCache.default())
    assert (image_cache_dir / "image-cache.json").is_file()

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded an image the cache knows")

    monkeypatch.setattr("skinonnx.data.duplicates.load_rgb", no_decoding)
    cache = ImageCache.default()
    assert leakage(data, cache) == first and cache.misses == 0 and cache.hits == 53 + 1  # hashes + the verified pair


def test_a_changed_file_is_hashed_again(fresh_copy: Path) -> None:
    cache = ImageCache.default()
    path = _train_image(fresh_copy)
    (before,), _, _ = fingerprint_files([path], cache)
    cache.save()
    Image.open(_train_image(fresh_copy, 5)).save(path)  # other pixels under the same name
    cache = ImageCache.default()
    (after,), _, _ = fingerprint_files([path], cache)
    assert after.sha256 != before.sha256 and cache.misses == 1


def test_unreadable_files_are_reported_not_paired(fresh_copy: Path) -> None:
    bad = fresh_copy / "test" / "benign" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    empty = fresh_copy / "test" / "benign" / "empty.png"
    empty.write_bytes(b"")
    prints, _, problems = fingerprint_files([bad, empty, _train_image(fresh_copy)])
    assert prints[0] is None and prints[1] is None and prints[2] is not None
    assert set(problems) == {0, 1} and "empty" in problems[1]
    assert duplicate_pairs([bad, empty, _train_image(fresh_copy)], prints) == []


def test_leakage_check_refuses_naming_the_pairs_unless_allowed(fresh_copy: Path) -> None:
    from skinonnx.data.duplicates import LeakageError, leakage_check

    source = _train_image(fresh_copy)
    raw, suffix = alter(source, "cropped")
    (fresh_copy / "test" / "malignant" / f"crop{suffix}").write_bytes(raw)
    data = discover(fresh_copy, write_split_file=False)
    named = rf"test/malignant/crop\.jpg = train/malignant/{source.name}"
    with pytest.raises(LeakageError, match=rf"1 validation/test image\(s\) duplicate training images.*{named}"
                                           ".*--allow-leakage"):
        leakage_check(data, allow=False)
    said: list[str] = []
    record = leakage_check(data, allow=True, echo=said.append)
    assert record["pairs"] == 1 and record["allowed"] and record["by_split"] == {"val": 0, "test": 1}
    assert said and said[0].startswith("warning: training despite leakage")
    clean = leakage_check(discover(_clean(fresh_copy), write_split_file=False), allow=False)
    assert clean["pairs"] == 0 and not clean["allowed"]


def _clean(root: Path) -> Path:
    for planted in root.glob("test/*/crop.jpg"):
        planted.unlink()
    return root


def test_a_hash_match_of_two_different_lesions_is_not_a_duplicate() -> None:
    """Generated lesions are smooth blobs: some share a perceptual hash; the aligned pixels tell them apart."""
    import tempfile

    from skinonnx.data.duplicates import MAX_PIXEL_DIFFERENCE, hash_matrix, near_pairs, pixel_difference
    from skinonnx.data.images import load_rgb
    from skinonnx.data.synthetic import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:  # the default demo data: 2 such hash matches, measured
        generate_dataset(Path(tmp), counts={"train": 32, "val": 8, "test": 10}, size=128, seed=0, progress=False)
        data = discover(Path(tmp), write_split_file=False)
        paths = [s.path for split in data.splits.values() for s in split]
        prints, _, _ = fingerprint_files(paths)
        matches = near_pairs(hash_matrix(prints), hash_matrix(prints), NEAR_DISTANCE, same=True)
        assert matches  # the hash alone would pair distinct lesions here
        for i, j in matches:
            assert pixel_difference(load_rgb(paths[i]), load_rgb(paths[j])) > MAX_PIXEL_DIFFERENCE
        assert duplicate_pairs(paths, prints) == [] and leakage(data) == []


def test_the_model_card_line_states_the_check(fresh_copy: Path) -> None:
    from skinonnx.data.duplicates import leakage_card_line, leakage_check

    assert "not recorded" in leakage_card_line(None)
    data = discover(fresh_copy, write_split_file=False)
    assert "no validation or test image duplicates" in leakage_card_line(leakage_check(data, allow=False))
    source = _train_image(fresh_copy)
    (fresh_copy / "val" / "malignant" / "same.png").write_bytes(source.read_bytes())
    record = leakage_check(discover(fresh_copy, write_split_file=False), allow=True, echo=lambda _: None)
    line = leakage_card_line(record)
    assert "1 validation/test image(s)" in line and "--allow-leakage" in line and "identical file" in line
