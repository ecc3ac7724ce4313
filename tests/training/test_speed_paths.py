"""The speed paths do the same work as the plain ones: decoded-once training cache, JPEG draft
decoding, fused normalisation, I/O binding. (Speed itself is measured in benchmarks/, not here.)"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import skinonnx.data.preprocessing as preprocessing
from skinonnx.data.images import load_rgb
from skinonnx.data.preprocessing import Preprocessing


class DecodeCounter:
    """Wraps the one decoder every path uses and counts calls per file."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()
        real = preprocessing.load_rgb

        def counting(path, **kwargs):
            with self._lock:
                self.calls[str(path)] = self.calls.get(str(path), 0) + 1
            return real(path, **kwargs)

        monkeypatch.setattr(preprocessing, "load_rgb", counting)

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _loaders(data: Path, cache_mb: int):
    import torch

    from skinonnx.data.layouts import discover
    from skinonnx.training.loop import TrainConfig, load_data

    cfg = TrainConfig(data=str(data), weights="none", image_size=32, batch_size=8, cache_mb=cache_mb,
                      progress=False, name="cache-test")
    found = discover(data, write_split_file=False)
    return found, load_data(cfg, found, Preprocessing.for_size(32), torch.device("cpu"))


def _epochs(loader, n: int) -> int:
    seen = 0
    for _ in range(n):
        for images, _ in loader:
            seen += len(images)
    return seen


def test_training_decodes_each_image_once_across_epochs(synthetic_data: Path, monkeypatch) -> None:
    counter = DecodeCounter(monkeypatch)
    found, (train_loader, val_loader, skipped) = _loaders(synthetic_data, cache_mb=64)
    n_train, n_val = len(found.split("train")), len(found.split("val"))
    assert not skipped and counter.total == n_train + n_val  # the fill
    assert set(counter.calls.values()) == {1}
    assert _epochs(train_loader, 2) == 2 * n_train and _epochs(val_loader, 2) == 2 * n_val
    assert counter.total == n_train + n_val  # two epochs later: not one more JPEG/PNG decode


def test_training_streams_what_does_not_fit_in_the_cache(synthetic_data: Path, monkeypatch) -> None:
    counter = DecodeCounter(monkeypatch)
    found, (train_loader, _, _) = _loaders(synthetic_data, cache_mb=0)
    n_train, n_val = len(found.split("train")), len(found.split("val"))
    assert counter.total == n_train + n_val  # decoded once to validate every file
    _epochs(train_loader, 2)
    assert counter.total == n_train + n_val + 2 * n_train  # then once per epoch: streaming


def test_jpeg_draft_decodes_a_large_original_at_reduced_scale(synthetic_data: Path, tmp_path: Path) -> None:
    source = sorted((synthetic_data / "train" / "malignant").glob("*.png"))[0]
    large = tmp_path / "original.jpg"
    with Image.open(source) as img:
        img.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(large, quality=92)
    prep = Preprocessing.for_size(224)
    with load_rgb(large, draft_size=prep.resize_size) as drafted:
        assert drafted.size == (500, 375)  # 1/8 scale: the smallest with both sides >= 256
    with load_rgb(large) as full:
        assert full.size == (4000, 3000)
        reference = prep(full)
    fast = prep.from_file(large)
    assert fast.shape == reference.shape == (3, 224, 224)
    # same picture: DCT-domain scaling differs from a full decode + antialiased resize by a few grey levels
    assert np.abs(fast - reference).mean() < 0.05  # normalised units; one grey level is ~0.017


def test_small_jpegs_are_decoded_at_full_scale(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(path)
    with load_rgb(path, draft_size=256) as img:
        assert img.size == (400, 300)  # a 1/2 scale would drop below 256: no draft


@pytest.mark.parametrize("mean,std", [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                                      ((0.5, 0.2, 0.9), (0.1, 1.7, 0.3))])
def test_fused_normalize_equals_the_textbook_formula(mean, std) -> None:
    prep = Preprocessing(image_size=32, resize_size=37, mean=mean, std=std)
    pixels = np.random.default_rng(1).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    expected = ((pixels / 255.0 - np.asarray(mean)) / np.asarray(std)).transpose(2, 0, 1)
    got = prep.normalize(Image.fromarray(pixels))
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (3, 37, 45)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    with pytest.raises(ValueError, match="RGB"):
        prep.normalize(pixels[..., 0])


@pytest.mark.slow
def test_io_binding_path_gives_the_same_probabilities(trained) -> None:
    from skinonnx.deploy.runtime import OnnxClassifier

    plain = OnnxClassifier(trained.onnx, "cpu")
    bound = OnnxClassifier(trained.onnx, "cpu", io_binding=True)  # the CUDA code path, bound to host memory
    assert not plain.io_binding and bound.io_binding
    paths = sorted((trained.data / "test").rglob("*.png"))[:5]
    batch = np.stack([plain.preprocessing.from_file(p) for p in paths])
    np.testing.assert_allclose(bound.predict_arrays(batch), plain.predict_arrays(batch), rtol=0, atol=1e-6)


@pytest.mark.slow
def test_predict_can_save_the_optimised_graph_and_it_still_runs(trained, tmp_path: Path) -> None:
    import onnx

    from skinonnx.deploy.runtime import OnnxClassifier

    from ..conftest import run_cli

    optimized = tmp_path / "model.opt.onnx"
    result = run_cli("predict", "--onnx", trained.onnx, str(trained.data / "test"), "-o", tmp_path / "p.csv",
                     "--provider", "cpu", "--save-optimized", optimized, "--quiet")
    assert "optimised graph saved" in result.output and optimized.is_file()
    saved, source = onnx.load(str(optimized)), onnx.load(str(trained.onnx))
    assert "Relu" not in {n.op_type for n in saved.graph.node}  # fused into the convolutions
    assert len(saved.graph.node) < len(source.graph.node)
    assert {p.key: p.value for p in saved.metadata_props}["classes"] == '["benign", "malignant"]'
    original, reloaded = OnnxClassifier(trained.onnx, "cpu"), OnnxClassifier(optimized, "cpu")
    batch = np.stack([original.preprocessing.from_file(p) for p in sorted((trained.data / "val").rglob("*.png"))])
    np.testing.assert_allclose(reloaded.predict_arrays(batch), original.predict_arrays(batch), atol=1e-5)
    same = run_cli("predict", "--onnx", trained.onnx, str(trained.data / "test"), "--save-optimized", trained.onnx,
                   "--provider", "cpu", "--quiet", expect=2)
    assert "must differ from the model path" in same.output
