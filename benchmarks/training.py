"""Training throughput: a plain fp32 loop (NCHW, JPEGs decoded every step) vs skinonnx's train path
(channels_last + decoded-once cache), and on CPUs with a bf16 unit the default with bf16 autocast,
one step of each in turn, with skinonnx.training.loop.train_step. Process-wide settings (allocator,
OpenMP wait policy) are the same for all loops here; benchmarks/train_speed.py compares those too."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from skinonnx.data.layouts import Sample
from skinonnx.data.preprocessing import Preprocessing
from skinonnx.training.device import amp_dtype
from skinonnx.training.loaders import ImageCache, LesionDataset, default_workers, make_loader
from skinonnx.training.loop import TrainConfig, make_optimizer, train_step
from skinonnx.training.model import build_model

from .peak import median


class _Loop:
    def __init__(self, name: str, samples: Sequence[Sample], prep: Preprocessing, *, channels_last: bool,
                 cached: bool, batch_size: int, seed: int, dtype: torch.dtype | None = None) -> None:
        self.name, self.channels_last, self.dtype = name, channels_last, dtype
        device = torch.device("cpu")
        cache = ImageCache(prep, limit_bytes=(1 << 40) if cached else 0)
        start = time.perf_counter()
        usable, _ = cache.fill(samples, progress=False) if cached else (list(samples), [])
        self.fill_seconds = time.perf_counter() - start if cached else 0.0
        dataset = LesionDataset(usable, cache, train=True)
        self.loader = make_loader(dataset, batch_size=batch_size, shuffle=True, workers=default_workers(device),
                                  seed=seed, device=device)
        torch.manual_seed(seed)
        self.model = build_model(2, "none")
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = make_optimizer(TrainConfig(weights="none", name="bench"), self.model)
        self.criterion = nn.CrossEntropyLoss()
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.batches: Iterator = iter(())
        self.rates: list[float] = []
        self.data_fraction: list[float] = []

    def _next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def step(self, record: bool) -> None:
        start = time.perf_counter()
        images, targets = self._next_batch()
        loaded = time.perf_counter()
        train_step(self.model, images, targets, self.criterion, self.optimizer, torch.device("cpu"),
                   scaler=self.scaler, amp=self.dtype is not None, channels_last=self.channels_last, dtype=self.dtype)
        end = time.perf_counter()
        if record:
            self.rates.append(len(targets) / (end - start))
            self.data_fraction.append((loaded - start) / (end - start))


def training_throughput(samples: Sequence[Sample], image_size: int, *, batch_size: int, steps: int,
                        seed: int = 0) -> dict[str, dict[str, float]]:
    prep = Preprocessing.for_size(image_size)
    loops = [
        _Loop("plain fp32 (NCHW, decode every step)", samples, prep, channels_last=False, cached=False,
              batch_size=batch_size, seed=seed),
        _Loop("skinonnx (channels_last + cache)", samples, prep, channels_last=True, cached=True,
              batch_size=batch_size, seed=seed),
    ]
    bf16 = amp_dtype(torch.device("cpu"), True)
    if bf16 is not None:
        loops.append(_Loop("skinonnx default (+ bf16 autocast)", samples, prep, channels_last=True, cached=True,
                           batch_size=batch_size, seed=seed, dtype=bf16))
    for loop in loops:
        loop.step(record=False)  # warm-up: allocator, oneDNN primitive cache
    for _ in range(steps):
        for loop in loops:
            loop.step(record=True)
    base = median(loops[0].rates)
    return {loop.name: {"images_per_s": median(loop.rates), "ratio_to_plain": median(loop.rates) / base,
                        "data_time_fraction": median(loop.data_fraction), "steps": len(loop.rates),
                        "cache_fill_seconds": loop.fill_seconds, "channels_last": loop.channels_last,
                        "precision": str(loop.dtype or torch.float32).removeprefix("torch.")}
            for loop in loops}
