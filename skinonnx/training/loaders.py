"""PyTorch data loading: a decoded-once image cache, training augmentation, DataLoaders.

Evaluation uses exactly :class:`~skinonnx.data.preprocessing.Preprocessing` (same pixels as
ONNX Runtime); training adds random augmentation on the cached, resized uint8 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms
from tqdm import tqdm

from ..cpus import usable_cpus
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import Sample
from ..data.preprocessing import Preprocessing
from ..errors import DataError, ImageError


@dataclass
class ImageCache:
    """Resized uint8 images kept in memory, so later epochs decode no JPEG at all.

    Filled once (in threads) before the DataLoader starts; bounded by ``limit_bytes``:
    what does not fit is decoded on demand (streaming).
    """

    prep: Preprocessing
    limit_bytes: int = 2 << 30
    max_pixels: int = DEFAULT_MAX_PIXELS
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    used_bytes: int = 0

    def fill(self, samples: Sequence[Sample], *, progress: bool = True, desc: str = "decode"
             ) -> tuple[list[Sample], list[tuple[str, str]]]:
        """Decode every sample once; return (usable samples, [(path, problem)] skipped)."""
        def work(sample: Sample) -> tuple[Sample, np.ndarray | None, str | None]:
            try:
                return sample, np.asarray(self.prep.load_resized(sample.path, self.max_pixels)), None
            except ImageError as exc:
                return sample, None, exc.problem

        good, skipped = [], []
        workers = min(8, usable_cpus())  # JPEG decoding releases the GIL
        with ThreadPoolExecutor(workers) as pool:
            for sample, arr, err in tqdm(pool.map(work, samples), total=len(samples), desc=desc, unit="img",
                                         disable=not progress, leave=False):
                if arr is None:
                    skipped.append((str(sample.path), str(err)))
                    continue
                good.append(sample)
                if self.used_bytes + arr.nbytes <= self.limit_bytes:
                    self.arrays[str(sample.path)] = arr
                    self.used_bytes += arr.nbytes
        return good, skipped

    def get(self, sample: Sample) -> Image.Image:
        arr = self.arrays.get(str(sample.path))
        if arr is not None:
            return Image.fromarray(arr)
        return self.prep.load_resized(sample.path, self.max_pixels)


def train_augmentation(prep: Preprocessing, strength: float = 1.0) -> transforms.Compose:
    """Dermoscopy is orientation-free: flips and right-angle turns, mild crops and colour changes.

    ``strength`` (``--augment-strength``) scales the crops and colour changes: 0 keeps flips and turns only, 1 is
    the default (crops of 60-100 % of the image, brightness/contrast +-15 %), 2 doubles the changes."""
    s = float(strength)
    low_scale = max(0.1, 1.0 - 0.4 * s)
    ratio = (0.8 ** s, 1.25 ** s)
    return transforms.Compose([
        transforms.RandomResizedCrop(prep.image_size, scale=(low_scale, 1.0), ratio=ratio,
                                     interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.RandomHorizontalFlip(),
        transforms.RandomVerticalFlip(),
        transforms.RandomChoice([transforms.RandomRotation((a, a)) for a in (0, 90, 180, 270)]),
        transforms.ColorJitter(brightness=0.15 * s, contrast=0.15 * s, saturation=0.1 * s, hue=min(0.5, 0.02 * s)),
    ])


class LesionDataset(Dataset):
    def __init__(self, samples: Sequence[Sample], cache: ImageCache, *, train: bool, strength: float = 1.0) -> None:
        self.samples = list(samples)
        self.cache = cache
        self.prep = cache.prep
        self.augment = train_augmentation(self.prep, strength) if train else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        img = self.cache.get(sample)
        img = self.augment(img) if self.augment else self.prep.center_crop(img)
        return torch.from_numpy(self.prep.normalize(img)), sample.label


def default_workers(device: torch.device) -> int:
    """CPU training: 0, the main process. Augmenting a cached image costs ~1 % of a 224 px ResNet50
    step on the CPU (benchmarks/ measures the data-time share), and worker processes would take
    cores from the math. GPU: up to 8 processes (one CPU left for the main one) to keep it fed."""
    if device.type != "cuda":
        return 0
    return max(1, min(8, usable_cpus() - 1))


def make_loader(dataset: LesionDataset, *, batch_size: int, shuffle: bool, workers: int, seed: int,
                device: torch.device, sampler: Sampler | None = None) -> DataLoader:
    """``sampler`` (class-balanced, or the per-epoch training sampler) replaces ``shuffle``."""
    if len(dataset) == 0:
        raise DataError("no usable images in this split")
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
                      num_workers=workers, generator=generator, pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                      drop_last=False)
