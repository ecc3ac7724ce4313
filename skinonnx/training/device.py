"""Where training runs: device choice, seeding, threads, mixed precision (fp16 on CUDA, bf16 on capable CPUs)."""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from ..cpus import bf16_hardware, cpu_flags, physical_cores
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


def configure_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: the physical cores this process may use); return the count."""
    count = threads or physical_cores()
    torch.set_num_threads(count)
    return count


def cpu_bf16_unit(flags: frozenset[str] | None = None) -> str | None:
    """The CPU's hardware bf16 unit ('amx_bf16', 'avx512_bf16') if oneDNN can use it, else None.

    Without such a unit bf16 is emulated and training runs 11-26x slower, so bf16 is never chosen then.
    """
    unit = bf16_hardware(cpu_flags() if flags is None else flags)
    if unit is None or not torch.backends.mkldnn.is_available():
        return None
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return unit if supported is None or supported() else None


def amp_dtype(device: torch.device, enabled: bool, flags: frozenset[str] | None = None) -> torch.dtype | None:
    """Mixed precision of a training step: fp16 on CUDA, bf16 on CPUs with a bf16 unit, else None (fp32).

    ``flags``: the CPU's flags (default: this machine's /proc/cpuinfo)."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_bf16_unit(flags) is not None:
        return torch.bfloat16
    return None


def autocast(device: torch.device, enabled: bool, dtype: torch.dtype | None = None
             ) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when ``enabled``; on the CPU only with an explicit ``dtype`` (bf16, see amp_dtype)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=dtype or torch.float16)
    if enabled and dtype is not None:
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()
