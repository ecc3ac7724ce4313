"""Where training runs: device choice, seeding, mixed precision."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..errors import SkinOnnxError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SkinOnnxError("--device cuda requested but no CUDA GPU is available to PyTorch; use --device cpu")
    if name not in ("cpu", "cuda"):
        raise SkinOnnxError(f"unknown device '{name}' (auto, cpu, cuda)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()
