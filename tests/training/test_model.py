"""Weights loading: torchvision's real code path, and a clear offline error."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision

from skinonnx.errors import WeightsUnavailableError
from skinonnx.training import model as model_mod

from ..conftest import run_cli


def test_offline_imagenet_error_names_the_file_and_alternatives(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        model_mod.build_model(2, "imagenet")
    message = str(info.value)
    expected = tmp_path / "torch-home" / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    assert str(expected) in message and "--weights none" in message and "--weights PATH" in message


def test_imagenet_weights_load_from_the_torch_cache_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Placing the file where the error says makes `--weights imagenet` work offline."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet50()
    target = model_mod.imagenet_weights_file()
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    built = model_mod.build_model(2, "imagenet")
    assert torch.equal(built.conv1.weight, reference.conv1.weight)
    assert built.fc.out_features == 2


def test_local_weights_file_reuses_the_backbone(tmp_path: Path) -> None:
    reference = torchvision.models.resnet50()
    path = tmp_path / "r50.pth"
    torch.save(reference.state_dict(), path)
    built = model_mod.build_model(2, str(path))
    assert torch.equal(built.layer4[2].conv3.weight, reference.layer4[2].conv3.weight)


def test_train_cli_offline_error_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             synthetic_data: Path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda *a, **k: (_ for _ in ()).throw(urllib.error.URLError("offline")))
    result = run_cli("train", "--data", synthetic_data, "--epochs", "1", "--image-size", "32", "--quiet",
                     "--checkpoint-dir", tmp_path / "ck", "--runs-dir", tmp_path / "runs", expect=1)
    assert "Traceback" not in result.output
    assert "ImageNet weights are not available offline" in result.output
