"""The network: torchvision ResNet50 with a new classification head."""

from __future__ import annotations

import os
import socket
import urllib.error
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import CheckpointError, WeightsUnavailableError
from .torch_load import safe_torch_load

ARCH = "resnet50"
IMAGENET_WEIGHTS = torchvision.models.ResNet50_Weights.IMAGENET1K_V2
DOWNLOAD_TIMEOUT_S = 20
FEATURES = 2048  # what ResNet50's pooled features (the head's input) hold


def imagenet_weights_file() -> Path:
    """Where torchvision looks for (and caches) the ImageNet weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET_WEIGHTS.url)


def build_model(num_classes: int, weights: str = "imagenet") -> nn.Module:
    """ResNet50 with a ``num_classes`` head; ``weights`` is ``imagenet``, ``none`` or a file path."""
    if weights == "none":
        # Each residual block starts as the identity (last BN scale 0): from-scratch training on a few
        # hundred images is markedly more stable that way (Goyal et al. 2017, "bag of tricks").
        return torchvision.models.resnet50(weights=None, num_classes=num_classes, zero_init_residual=True)
    model = torchvision.models.resnet50(weights=None)
    if weights == "imagenet":
        model.load_state_dict(_imagenet_state_dict())
    else:
        model.load_state_dict(_local_state_dict(Path(weights)))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's real loading code, with an offline error that says what to do."""
    target = imagenet_weights_file()
    if target.is_file():
        return torch.load(target, map_location="cpu", weights_only=True)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return IMAGENET_WEIGHTS.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights are not available offline ({type(exc).__name__}): place {IMAGENET_WEIGHTS.url} "
            f"at {target}, or use --weights PATH (a local ResNet50 state dict) or --weights none") from None
    finally:
        socket.setdefaulttimeout(previous)


def check_weights_spec(weights: str) -> None:
    """Fail on a mistyped --weights, or ImageNet weights not to be had offline, before any data is decoded."""
    if weights == "imagenet" and not imagenet_weights_file().is_file():
        _imagenet_state_dict()  # downloads into torchvision's cache, or says what to do
    if weights not in ("imagenet", "none") and not Path(weights).is_file():
        raise WeightsUnavailableError(f"--weights {weights}: file not found (use 'imagenet', 'none' or the path "
                                      "of a ResNet50 state dict or skinonnx checkpoint)")
    if weights not in ("imagenet", "none"):
        _local_state_dict(Path(weights))  # another architecture, a corrupt file: refused before any data is read


def _local_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A ResNet50 state dict from a file (a backbone from `pretrain`, a plain state dict or a skinonnx checkpoint),
    its ``fc`` head replaced by a fresh one; anything else is refused naming what does not fit."""
    if not path.is_file():
        raise WeightsUnavailableError(f"--weights {path}: file not found (or use --weights imagenet / none)")
    state = safe_torch_load(path, "a weights file")
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a skinonnx checkpoint: reuse its backbone
    state = backbone_weights(state, path)
    state.update({k: v for k, v in torchvision.models.resnet50().state_dict().items() if k.startswith("fc.")})
    return state


def backbone_weights(state: object, path: Path) -> dict[str, torch.Tensor]:
    """``state`` without its ``fc`` head, checked against torchvision's ResNet50: every key present, none extra,
    every shape the same; the head, when there is one, must take ResNet50's 2048 features (its class count is
    free: it is replaced)."""
    expected = {k: v.shape for k, v in torchvision.models.resnet50().state_dict().items() if not k.startswith("fc.")}
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: not a ResNet50 state dict (expected a mapping of parameter names to "
                              f"tensors, as `pretrain` writes; found {type(state).__name__})")
    head = state.get("fc.weight")
    if head is not None and (head.ndim != 2 or head.shape[1] != FEATURES):
        raise CheckpointError(f"{path}: its head fc.weight has shape {list(head.shape)}; a ResNet50 head takes "
                              f"{FEATURES} features ([classes, {FEATURES}]): another architecture (ResNet18/34?)")
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing = [k for k in expected if k not in body]
    extra = [k for k in body if k not in expected]
    if missing or extra:
        parts = ([f"{len(missing)} missing keys, e.g. {missing[0]}"] if missing else []) + (
            [f"{len(extra)} unexpected keys, e.g. {extra[0]}"] if extra else [])
        raise CheckpointError(f"{path}: not a ResNet50 state dict ({'; '.join(parts)}); expected torchvision's "
                              f"resnet50 keys ({len(expected)} without the fc head)")
    wrong = [k for k, shape in expected.items() if body[k].shape != shape]
    if wrong:
        raise CheckpointError(f"{path}: not a ResNet50 state dict ({len(wrong)} tensors of another shape, e.g. "
                              f"{wrong[0]} {list(body[wrong[0]].shape)}, expected {list(expected[wrong[0]])})")
    return body
