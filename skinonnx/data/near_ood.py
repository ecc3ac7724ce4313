"""A near out-of-distribution image set, generated offline: close to a dermoscopic photo, still not one.

What a skin-lesion model should refuse but weak features accept (issue 29, docs/SAFETY.md). Kinds, written
as PNG files ``<kind>-<name>.png`` so they pass through the same decoder and preprocessing as any photo:

* from real dermoscopic images (``sources``, e.g. the validation split): ``greyscale-*`` (luminance only),
  ``blurred-*`` (Gaussian blur of radius 6 px at 256 px), ``colourcast-*`` (channel gains of a strong
  blue, green or yellow cast, in turn);
* ``flat-*``: flat pink and skin-tone images, plain and with faint noise;
* ``blob-*``: a pink or reddish "clinical" blob with soft edges on unevenly lit skin-coloured background;
* ``skin-*``: close-ups of the skin of a face (crops of scikit-image's bundled astronaut portrait);
* ``closeup-*``: crops of scikit-image's bundled non-dermoscopic colour photographs (cats, coffee, rocket).

No download, deterministic for ``seed``. No torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from .images import load_rgb

KINDS = ("greyscale", "blurred", "colourcast", "flat", "blob", "skin", "closeup")
BLUR_RADIUS = 6
CASTS = {"blue": (0.75, 0.9, 1.35), "green": (0.8, 1.25, 0.8), "yellow": (1.25, 1.1, 0.6)}
#: (left, top, side) in the 512 x 512 astronaut portrait: the face and skin-only close-ups of it
SKIN_CROPS = {"face": (170, 60, 120), "cheek-left": (185, 110, 40), "cheek-right": (245, 118, 32),
              "forehead": (205, 76, 30), "nose": (213, 108, 40), "chin": (218, 160, 30)}
#: skimage.data photographs and the crops taken from each: (left, top, side) as fractions of the shorter side
CLOSEUPS = {"chelsea": ((0.35, 0.05, 0.6), (0.6, 0.3, 0.5)), "cat": ((0.35, 0.05, 0.6), (0.6, 0.3, 0.5)),
            "coffee": ((0.3, 0.1, 0.7), (0.7, 0.4, 0.4)), "rocket": ((0.5, 0.1, 0.5), (0.0, 0.5, 0.5))}
PINKS = {"pink": (240, 170, 180), "rose": (214, 120, 140), "skin-light": (236, 196, 170),
         "skin-medium": (198, 140, 105)}


def _square(image: Image.Image, size: int) -> Image.Image:
    return image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)


def from_dermoscopic(sources: Sequence[str | os.PathLike[str]], size: int = 256) -> dict[str, np.ndarray]:
    """Greyscale, blurred and colour-cast versions of ``sources`` (each image becomes all three kinds)."""
    out: dict[str, np.ndarray] = {}
    for i, path in enumerate(sources):
        img = _square(load_rgb(path), size)
        stem = Path(path).stem
        out[f"greyscale-{stem}"] = np.asarray(img.convert("L").convert("RGB"))
        out[f"blurred-{stem}"] = np.asarray(img.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))
        name, gains = list(CASTS.items())[i % len(CASTS)]
        cast = np.asarray(img, np.float64) * np.asarray(gains)
        out[f"colourcast-{name}-{stem}"] = np.clip(cast, 0, 255).astype(np.uint8)
    return out


def flat_images(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Flat pink and skin-tone images, plain and with faint Gaussian noise (sd 3 grey levels)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, rgb in PINKS.items():
        flat = np.broadcast_to(np.asarray(rgb, np.float64), (size, size, 3))
        out[f"flat-{name}"] = flat.astype(np.uint8)
        out[f"flat-{name}-noisy"] = np.clip(flat + rng.normal(0, 3, flat.shape), 0, 255).astype(np.uint8)
    return out


def blob_images(size: int = 256, seed: int = 0, n: int = 8) -> dict[str, np.ndarray]:
    """A soft pink/red/brownish ellipse ("clinical" lesion photo) on skin with a lighting gradient."""
    rng = np.random.default_rng(seed + 1)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    out = {}
    for i in range(n):
        skin = np.asarray(list(PINKS.values())[2 + i % 2], np.float64)
        light = 1 + 0.15 * ((xx - 0.5) * rng.uniform(-1, 1) + (yy - 0.5) * rng.uniform(-1, 1))
        cx, cy = 0.5 + rng.uniform(-0.12, 0.12, 2)
        rx, ry = rng.uniform(0.12, 0.3, 2)
        d = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
        inside = 1 / (1 + np.exp((d - 1) / rng.uniform(0.05, 0.2)))  # soft edge
        colour = np.asarray([(220, 90, 110), (200, 110, 100), (170, 90, 80), (230, 130, 150)][i % 4], np.float64)
        img = (skin * (1 - inside[..., None]) + colour * inside[..., None]) * light[..., None]
        img += rng.normal(0, 2, img.shape)
        out[f"blob-{i}"] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def skin_closeups(size: int = 256) -> dict[str, np.ndarray]:
    """Crops of the face in scikit-image's astronaut portrait (bundled with the wheel)."""
    import skimage.data

    face = skimage.data.astronaut()
    return {f"skin-{name}": np.asarray(_square(Image.fromarray(face[y:y + s, x:x + s]), size))
            for name, (x, y, s) in SKIN_CROPS.items()}


def photo_closeups(size: int = 256) -> dict[str, np.ndarray]:
    """Crops of scikit-image's bundled colour photographs (those this installation has)."""
    import skimage.data

    out = {}
    for name, crops in CLOSEUPS.items():
        try:
            photo = np.asarray(getattr(skimage.data, name)())[..., :3]
        except Exception:  # a data file missing from this installation: skip it
            continue
        short = min(photo.shape[:2])
        for i, (fx, fy, fs) in enumerate(crops):
            x, y, s = int(fx * short), int(fy * short), int(fs * short)
            out[f"closeup-{name}-{i}"] = np.asarray(_square(Image.fromarray(photo[y:y + s, x:x + s]), size))
    return out


def write_near_ood_images(folder: str | os.PathLike[str], sources: Sequence[str | os.PathLike[str]], *,
                          size: int = 256, seed: int = 0) -> list[Path]:
    """Write the set as PNGs (``<kind>-<name>.png``, kinds :data:`KINDS`) into ``folder``; their paths.

    ``sources``: dermoscopic images for the greyscale, blurred and colour-cast kinds (each gives one of each)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = {**from_dermoscopic(sources, size), **flat_images(size, seed), **blob_images(size, seed),
              **skin_closeups(size), **photo_closeups(size)}
    paths = []
    for name, image in images.items():
        path = folder / f"{name}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths
