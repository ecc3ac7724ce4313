"""Model-only inference throughput: PyTorch eager vs ONNX Runtime fp32 vs INT8, interleaved.

Every repeat times one call of each variant in turn, so a burst of load from other processes
hits all variants alike and the ratios stay meaningful on a shared machine.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .peak import median


@dataclass
class Variant:
    name: str
    run: Callable[[], object]  # one call = one batch
    images_per_call: int


def interleaved(variants: list[Variant], *, repeats: int, warmup: int = 2, min_images: int = 8
                ) -> dict[str, list[float]]:
    """images/s of each variant over ``repeats`` rounds (each round: every variant once, >= min_images)."""
    calls = {v.name: max(1, -(-min_images // v.images_per_call)) for v in variants}
    for v in variants:
        for _ in range(warmup):
            v.run()
    rates: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(repeats):
        for v in variants:
            start = time.perf_counter()
            for _ in range(calls[v.name]):
                v.run()
            rates[v.name].append(calls[v.name] * v.images_per_call / (time.perf_counter() - start))
    return rates


def eager_variant(name: str, model, batch: np.ndarray, *, channels_last: bool) -> Variant:
    import torch

    net = copy.deepcopy(model).eval()
    x = torch.from_numpy(batch)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def run() -> object:
        with torch.inference_mode():
            return net(x)

    return Variant(name, run, len(batch))


def ort_variant(name: str, classifier, batch: np.ndarray) -> Variant:
    """Through OnnxClassifier.predict_arrays: the function `test` and `predict` call."""
    return Variant(name, lambda: classifier.predict_arrays(batch), len(batch))


def summarize(rates: dict[str, list[float]], baseline: str) -> dict[str, dict[str, float]]:
    base = median(rates[baseline])
    return {name: {"images_per_s": median(r), "ratio_to_eager": median(r) / base, "repeats": len(r),
                   "spread": (max(r) - min(r)) / median(r) if r else float("nan")} for name, r in rates.items()}
