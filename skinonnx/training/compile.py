"""``train --compile``: torch.compile (inductor) for the training steps, when it repays its compile time.

The compiled module only runs the full training batches. The eager module it wraps (same
parameters) runs the last, smaller batch of an epoch (no recompilation for a second shape),
validation, calibration and the checkpoints, so a checkpoint never has ``_orig_mod.`` keys.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import SkinOnnxError
from .device import autocast

COMPILE_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class CompileCost:
    """What compiling cost and saved in a measured run, in units that carry over to other step sizes.

    Compile time hardly depends on the image size; a step's time grows with batch x pixels.
    """

    compile_in_steps: float  # compile seconds / eager step seconds, at the reference step
    saved_fraction: float  # 1 - compiled step time / eager step time
    reference_work: int  # batch x height x width of the reference step
    measured: str  # where the figures come from

    def break_even_steps(self, batch_size: int, image_size: int) -> int:
        work = batch_size * image_size * image_size
        return math.ceil(self.compile_in_steps * self.reference_work / (self.saved_fraction * work))


# Measured per device kind (docs/SPEED.md, benchmarks/train_speed.py --variants default,compile). None: not
# measured, so auto never compiles there; benchmarks/gpu_train.py prints the figures for a GPU.
COMPILE_COSTS: dict[str, CompileCost | None] = {
    "cpu": CompileCost(compile_in_steps=32.6, saved_fraction=0.286, reference_work=16 * 224 * 224,
                       measured="2-core AMD EPYC (Zen 4), bf16 autocast, 224 px, batch 16: 473 s compile, "
                                "14.5 s -> 10.4 s per step; fp32 gave 15.4 steps and 21 %: 73 steps"),
    "cuda": None,
}


def compile_unavailable(device: torch.device) -> str | None:
    """Why inductor cannot compile for ``device`` here, or None when it can."""
    dynamo = getattr(torch, "_dynamo", None)
    if dynamo is None or not dynamo.is_dynamo_supported():
        return f"torch.compile is not supported by this Python/torch ({torch.__version__})"
    if device.type == "cpu":
        compiler = os.environ.get("CXX") or "c++"
        if shutil.which(compiler) is None and shutil.which("g++") is None:
            return "inductor on the CPU needs a C++ compiler (g++) on PATH"
    elif device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "inductor on CUDA needs triton (pip install triton)"
    return None


def decide(choice: str, device: torch.device, total_steps: int, batch_size: int, image_size: int
           ) -> tuple[bool, str]:
    """(compile?, the reason, as printed). ``on`` where inductor is unavailable is a user error."""
    if choice not in COMPILE_CHOICES:
        raise SkinOnnxError(f"unknown --compile '{choice}' ({', '.join(COMPILE_CHOICES)})")
    if choice == "off":
        return False, "off (--compile off)"
    problem = compile_unavailable(device)
    if problem is not None:
        if choice == "on":
            raise SkinOnnxError(f"--compile on: {problem}; train without it (--compile off)")
        return False, f"off ({problem})"
    if choice == "on":
        return True, "on (--compile on)"
    cost = COMPILE_COSTS.get(device.type)
    if cost is None:
        return False, f"off (auto: not measured on {device.type} yet; --compile on to use it)"
    need = cost.break_even_steps(batch_size, image_size)
    if total_steps < need:
        return False, f"off (auto: {total_steps} steps < {need}, from where compiling pays; --compile on)"
    return True, f"on (auto: {total_steps} steps >= {need}, from where compiling pays)"


class CompiledSteps(nn.Module):
    """Full batches through ``torch.compile(model)``, any other batch size through ``model`` itself."""

    def __init__(self, model: nn.Module, batch_size: int) -> None:
        super().__init__()
        self.model = model
        self.batch_size = batch_size
        self._compiled = [torch.compile(model, dynamic=False)]  # a list: not a second registered submodule

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] != self.batch_size or not self.training:
            return self.model(images)
        return self._compiled[0](images)

    def warm_up(self, image_size: int, device: torch.device, *, channels_last: bool,
                dtype: torch.dtype | None) -> float:
        """Compile now (forward and backward of one zero batch, shaped as in training); return the seconds.

        Leaves the model as it was: gradients are dropped and the BatchNorm statistics restored,
        so the run is the eager run, step for step, up to the compiled kernels' rounding.
        """
        buffers = {name: buf.detach().clone() for name, buf in self.model.named_buffers()}
        images = torch.zeros(self.batch_size, 3, image_size, image_size, device=device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        was_training = self.training
        self.train()
        try:
            start = time.perf_counter()
            with autocast(device, dtype is not None, dtype):
                out = self(images)
            out.float().sum().backward()
            return time.perf_counter() - start
        finally:
            self.model.zero_grad(set_to_none=True)
            with torch.no_grad():
                for name, buf in self.model.named_buffers():
                    buf.copy_(buffers[name])
            self.train(was_training)


class _DropNoCudaRuntime(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No CUDA runtime is found")


def quiet_cuda_probe() -> None:
    """Drop torch's "No CUDA runtime is found, using CUDA_HOME=..." warning for a CPU compile.

    Inductor's C++ build imports ``torch.utils.cpp_extension``, which says so on any machine with a CUDA
    toolkit folder but no GPU: true, irrelevant to a CPU run, and alarming in the middle of its log.
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    if not any(isinstance(f, _DropNoCudaRuntime) for f in logger.filters):
        logger.addFilter(_DropNoCudaRuntime())


def compiled_for_training(model: nn.Module, choice: str, *, batch_size: int, image_size: int,
                          device: torch.device, channels_last: bool, dtype: torch.dtype | None,
                          echo: Callable[[str], None]) -> nn.Module:
    """``CompiledSteps`` compiled now, with its time printed. If inductor fails, ``--compile on`` is a
    one-line error and ``auto`` trains the eager model (saying why): a speed-up must not end a run."""
    if device.type == "cpu":
        quiet_cuda_probe()
    steps = CompiledSteps(model, batch_size)
    try:
        seconds = steps.warm_up(image_size, device, channels_last=channels_last, dtype=dtype)
    except Exception as exc:  # inductor/compiler failures come as many exception types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if choice == "on":
            raise SkinOnnxError(f"--compile on: torch.compile failed ({first}); train with --compile off") from None
        torch._dynamo.reset()
        echo(f"torch.compile failed ({first}); training without it")
        return model
    echo(f"torch.compile: compiled in {seconds:.1f} s")
    return steps
