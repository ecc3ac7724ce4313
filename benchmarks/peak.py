"""What the CPU can do at best: measured fp32 FMA peak, MKL SGEMM, and ResNet50's FLOP count."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

# fp32 FMA peak measured on the reference machine kind (2 cores, AVX2 FMA; issue 5). Used as the
# "forward limit" denominator when the probe cannot be compiled, and always printed beside it.
DOCUMENTED_FMA_PEAK_GFLOPS = 199.0
PROBE_SOURCE = Path(__file__).with_name("fma_peak.c")


def measure_fma_peak(threads: int, iterations: int = 60_000_000) -> float | None:
    """Compile and run fma_peak.c (AVX2 FMA loop, OpenMP); GFLOP/s, or None without a C compiler/AVX2."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory(prefix="skinonnx-fma-") as tmp:
        exe = Path(tmp) / "fma_peak"
        build = subprocess.run([compiler, "-O2", "-mavx2", "-mfma", "-fopenmp", str(PROBE_SOURCE), "-o", str(exe)],
                               capture_output=True, text=True, check=False)
        if build.returncode != 0:
            return None
        run = subprocess.run([str(exe), str(threads), str(iterations)], capture_output=True, text=True,
                             check=False, timeout=120)
        try:
            return float(run.stdout.strip().splitlines()[-1]) if run.returncode == 0 else None
        except (ValueError, IndexError):
            return None


def measure_sgemm(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GEMM GFLOP/s through torch.matmul (MKL) with ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = max(best, 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best


def forward_flops(model, image_size: int) -> float:
    """FLOPs of one image's forward pass: 2 x the multiply-accumulates of every conv and linear layer.

    8.18e9 for ResNet50 at 224 (the usual "4.1 GMACs"); BN, ReLU, pooling and adds are <1 % and ignored.
    """
    import torch
    from torch import nn

    macs = [0]

    def conv_hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        kh, kw = module.kernel_size
        macs[0] += output[0].numel() * (module.in_channels // module.groups) * kh * kw

    def linear_hook(module: nn.Linear, _inputs, output: torch.Tensor) -> None:
        macs[0] += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, 3, image_size, image_size))
    finally:
        for h in handles:
            h.remove()
    return 2.0 * macs[0]


def median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")
