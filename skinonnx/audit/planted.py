"""A copy of a data set with known problems planted in it: how the audit's recall and precision are measured.

Copies of training images go into the test split, each altered one way (:data:`ALTERATIONS`), and a
fraction of the training and validation labels is flipped by moving the file to the other class folder.
The ground truth comes back as a :class:`Planted` record. Used by tests and ``benchmarks/audit.py``.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.images import load_rgb
from ..data.layouts import discover


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _crop(image: Image.Image, fraction: float) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * fraction), round(h * fraction)
    return image.crop((dx, dy, w - dx, h - dy))


#: name -> (file bytes of the altered copy, file suffix); the source's bytes and decoded image are given
ALTERATIONS: dict[str, Callable[[bytes, Image.Image], tuple[bytes, str]]] = {
    "exact": lambda raw, im: (raw, ".jpg"),
    "reencoded": lambda raw, im: (_jpeg(im, 60), ".jpg"),
    "png": lambda raw, im: (_png(im), ".png"),
    "resized": lambda raw, im: (_jpeg(im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR)), ".jpg"),
    "upscaled": lambda raw, im: (_jpeg(im.resize((im.width * 2, im.height * 2), Image.Resampling.BICUBIC)), ".jpg"),
    "squashed": lambda raw, im: (_jpeg(im.resize((im.width, int(im.height * 0.7)), Image.Resampling.BILINEAR)),
                                 ".jpg"),
    "cropped": lambda raw, im: (_jpeg(_crop(im, 0.05)), ".jpg"),
    "flipped": lambda raw, im: (_jpeg(im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), ".jpg"),
    "rotated": lambda raw, im: (_jpeg(im.transpose(Image.Transpose.ROTATE_90)), ".jpg"),
}


@dataclass
class Planted:
    root: Path
    copies: list[tuple[Path, Path, str]] = field(default_factory=list)  # (copy in test, training source, alteration)
    flipped: list[Path] = field(default_factory=list)  # images now filed under the wrong class


def alter(source: Path, how: str) -> tuple[bytes, str]:
    """The bytes and suffix of ``source`` altered by ``how`` (a key of :data:`ALTERATIONS`)."""
    return ALTERATIONS[how](source.read_bytes(), load_rgb(source))


def plant(source_root: Path, target: Path, *, copies_per_alteration: int = 4, flip_fraction: float = 0.05,
          alterations: tuple[str, ...] = tuple(ALTERATIONS), seed: int = 0) -> Planted:
    """Copy the data set at ``source_root`` (any layout) to split folders ``target/<split>/<class>/`` and plant
    altered copies of training images in the test split and flipped labels in train and val."""
    data = discover(source_root, write_split_file=False)
    planted = Planted(target)
    placed: dict[Path, Path] = {}  # source file -> its copy under target
    for split, samples in data.splits.items():
        for sample in samples:
            where = target / split / data.classes[sample.label] / sample.path.name
            if where.exists():
                raise ValueError(f"two images named {sample.path.name} in {split}/{data.classes[sample.label]}")
            where.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sample.path, where)
            placed[sample.path] = where
    rng = np.random.default_rng(seed)
    train = sorted(data.split("train"), key=lambda s: s.path)
    chosen = rng.choice(len(train), size=min(len(train), copies_per_alteration * len(alterations)), replace=False)
    sources = [train[int(i)] for i in chosen]
    for k, sample in enumerate(sources):
        how = alterations[k % len(alterations)]
        raw, suffix = alter(sample.path, how)
        copy = target / "test" / data.classes[sample.label] / f"planted-{how}-{sample.path.stem}{suffix}"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(raw)
        planted.copies.append((copy, placed[sample.path], how))
    used = {placed[s.path] for s in sources}
    pool = sorted(placed[s.path] for split in ("train", "val") for s in data.splits.get(split, [])
                  if placed[s.path] not in used)
    n_flip = round(flip_fraction * len(pool))
    for i in sorted(rng.choice(len(pool), size=n_flip, replace=False)):
        path = pool[int(i)]
        other = next(c for c in data.classes if c != path.parent.name)
        moved = path.parent.parent / other / path.name
        moved.parent.mkdir(parents=True, exist_ok=True)
        path.rename(moved)
        planted.flipped.append(moved)
    return planted
