"""A far out-of-distribution image set that needs no download: what a skin-lesion model must refuse.

Two kinds, written as PNG files so they go through the same decoder and preprocessing as any photo:

* ``photo-*``: scikit-image's bundled photographs (``skimage.data``: astronaut, coffee, chelsea, rocket,
  camera, ...; grey ones as RGB). Only the images shipped inside the scikit-image wheel are used (no
  download); the ones a given installation lacks are skipped.
* ``generated-*``: non-lesion renders: uniform and Gaussian noise, flat colours, checkerboards, stripes,
  gradients, and text/screenshot-like pages (drawn with Pillow).

Used by benchmarks/ood.py and the tests of the ``ood_score`` output (docs/SAFETY.md). No torch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: skimage.data loaders bundled with the wheel (no pooch download); colour and grey photographs and scans
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "cat", "coins", "moon", "page", "text",
                  "clock", "brick", "grass", "gravel", "colorwheel", "hubble_deep_field", "immunohistochemistry",
                  "retina", "cell", "microaneurysms", "logo", "horse", "checkerboard")


def skimage_photos() -> dict[str, np.ndarray]:
    """name -> RGB uint8 array for every bundled ``skimage.data`` image this installation has."""
    import skimage.data

    out = {}
    for name in SKIMAGE_PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # a data file missing from this installation (or no pooch): skip it
            continue
        out[name] = as_rgb_uint8(image)
    return out


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = np.clip(a.astype(np.float64) / max(float(a.max()), 1e-12) * 255, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return np.ascontiguousarray(a[..., :3])


def _text_page(rng: np.random.Generator, size: int, dark: bool) -> np.ndarray:
    img = Image.new("RGB", (size, size), (30, 30, 30) if dark else (255, 255, 255))
    draw = ImageDraw.Draw(img)
    ink = (220, 220, 220) if dark else (20, 20, 20)
    draw.rectangle([0, 0, size, size // 10], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))  # title bar
    words = ["skin", "lesion", "report", "patient", "date", "error", "settings", "OK", "Cancel", "file"]
    y = size // 8
    while y < size - 12:
        line = " ".join(rng.choice(words, size=int(rng.integers(2, 7))))
        draw.text((8, y), line, fill=ink)
        y += int(rng.integers(12, 20))
    draw.rectangle([size * 2 // 3, size * 3 // 4, size - 8, size - 8], outline=ink, width=2)  # a button
    return np.asarray(img)


def generated_images(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """name -> RGB uint8 array of synthetic non-lesion images (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for i in range(4):
        out[f"noise-uniform-{i}"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        out[f"noise-gaussian-{i}"] = np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    flats = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (220, 30, 30),
             "green": (40, 200, 60), "blue": (30, 60, 220), "skin": (224, 172, 138), "yellow": (240, 220, 40)}
    for name, rgb in flats.items():
        out[f"flat-{name}"] = np.broadcast_to(np.asarray(rgb, np.uint8), (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size]
    for cells in (2, 8, 32):
        board = (((yy * cells // size) + (xx * cells // size)) % 2 * 255).astype(np.uint8)
        out[f"checkerboard-{cells}"] = np.stack([board] * 3, -1)
    for period in (8, 32):
        stripes = ((xx // period) % 2 * 255).astype(np.uint8)
        out[f"stripes-{period}"] = np.stack([stripes, 255 - stripes, stripes // 2], -1)
    ramp = (xx * 255 // max(1, size - 1)).astype(np.uint8)
    out["gradient-rgb"] = np.stack([ramp, ramp.T, 255 - ramp], -1)
    for i in range(4):
        out[f"text-page-{i}"] = _text_page(rng, size, dark=bool(i % 2))
    return out


def write_far_ood_images(folder: str | os.PathLike[str], *, size: int = 256, seed: int = 0,
                         kinds: tuple[str, ...] = ("photo", "generated")) -> list[Path]:
    """Write the set as PNGs (``photo-<name>.png``, ``generated-<name>.png``) into ``folder``; their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Callable[[], dict[str, np.ndarray]]] = {
        "photo": skimage_photos, "generated": lambda: generated_images(size, seed)}
    paths = []
    for kind in kinds:
        for name, image in sources[kind]().items():
            path = folder / f"{kind}-{name}.png"
            Image.fromarray(image).save(path)
            paths.append(path)
    return paths
