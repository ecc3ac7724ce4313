"""The one preprocessing definition: geometry, normalisation, metadata round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skinonnx.data.preprocessing import Preprocessing
from skinonnx.deploy.contract import ModelContract


def test_resize_shorter_side_and_centre_crop_geometry() -> None:
    prep = Preprocessing(image_size=224, resize_size=256)
    img = Image.new("RGB", (600, 450))
    resized = prep.resize(img)
    assert resized.size == (int(256 * 600 / 450), 256)  # 341 x 256, long side truncated
    assert prep.center_crop(resized).size == (224, 224)
    assert prep.resize(Image.new("RGB", (300, 1000))).size == (256, int(256 * 1000 / 300))


def test_center_crop_takes_the_middle() -> None:
    prep = Preprocessing(image_size=16, resize_size=32)
    arr = np.zeros((32, 48, 3), np.uint8)
    arr[8:24, 16:32] = 255  # the exact centre 16x16 block
    crop = np.asarray(prep.center_crop(Image.fromarray(arr)))
    assert crop.min() == 255


def test_normalize_matches_hand_computation() -> None:
    prep = Preprocessing(image_size=16, resize_size=16)
    arr = np.full((16, 16, 3), (255, 0, 128), np.uint8)
    out = prep.normalize(arr)
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(out[:, 0, 0], expected, rtol=1e-6)


def test_for_size_derives_resize_from_crop_pct() -> None:
    assert Preprocessing.for_size(224).resize_size == 256
    assert Preprocessing.for_size(64).resize_size == 73


def test_from_file_equals_manual_pipeline(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "x.png"
    Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(path)
    prep = Preprocessing.for_size(32)
    manual = prep.normalize(prep.center_crop(prep.resize(Image.open(path).convert("RGB"))))
    np.testing.assert_array_equal(prep.from_file(path), manual)


def test_metadata_round_trip_through_the_contract() -> None:
    prep = Preprocessing(image_size=96, resize_size=110, interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                         std=(0.25, 0.25, 0.25))
    contract = ModelContract(classes=("benign", "malignant"), positive_index=1, preprocessing=prep,
                             threshold=0.37, threshold_policy="youden", temperature=1.7)
    back = ModelContract.from_metadata(contract.to_metadata())
    assert back.preprocessing == prep
    assert (back.threshold, back.temperature, back.classes) == (0.37, 1.7, ("benign", "malignant"))


@pytest.mark.parametrize("kwargs", [{"image_size": 8, "resize_size": 8}, {"image_size": 64, "resize_size": 32},
                                    {"interpolation": "lanczos9"}, {"std": (0.0, 1.0, 1.0)}])
def test_invalid_preprocessing_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Preprocessing(**kwargs)
