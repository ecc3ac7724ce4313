"""``train --compile``: torch.compile (inductor) for the training steps, when it repays its compile time.

The compiled module only runs the full training batches. The eager module it wraps (same
parameters) runs the last, smaller batch of an epoch (no recompilation for a second shape),
validation, calibration and the checkpoints, so a checkpoint never has ``_orig_mod.`` keys.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time

import torch
from torch import nn

from ..errors import SkinOnnxError
from .device import autocast

COMPILE_CHOICES = ("auto", "on", "off")
# Training steps from which compiling pays on each device: compile time / time saved per step,
# measured with `python -m benchmarks.speed` (docs/SPEED.md). None: never on by default there.
BREAK_EVEN_STEPS: dict[str, int | None] = {"cpu": None, "cuda": 300}


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


def decide(choice: str, device: torch.device, total_steps: int) -> tuple[bool, str]:
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
    need = BREAK_EVEN_STEPS.get(device.type)
    if need is None:
        return False, f"off (auto: compiling did not repay its time on {device.type} in our measurements; --compile on)"
    if total_steps < need:
        return False, f"off (auto: {total_steps} steps < {need}, where compiling starts to pay; --compile on)"
    return True, f"on (auto: {total_steps} steps >= {need}, where compiling starts to pay)"


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
        start = time.perf_counter()
        with autocast(device, dtype is not None, dtype):
            out = self(images)
        out.float().sum().backward()
        seconds = time.perf_counter() - start
        self.model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, buf in self.model.named_buffers():
                buf.copy_(buffers[name])
        self.train(was_training)
        return seconds
