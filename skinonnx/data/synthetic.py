"""Deterministic synthetic dermoscopy-like data set (numpy + Pillow only, no downloads).

Used as the project's embedded default data and for Grad-CAM pointing tests (every image
comes with its lesion mask). The two classes follow the ABCD rule of dermoscopy:

* **benign**: roughly round, symmetric lesion (A), regular smooth border (B), one brown
  shade (C), smaller diameter (D).
* **malignant**: asymmetric lobed shape (A), irregular notched border, partly blurred (B),
  several colours - dark brown, black, blue-grey veil, red areas, atypical dots (C), larger
  diameter (D).

Both classes share the same skin background model (skin tone with smooth low-frequency
variation and mild noise, an optional dark dermoscope vignette, a few hairs), and their
size and base-brown ranges overlap a little, so no single pixel statistic separates them.

``classes=K`` (K > 2, :func:`class_names`) draws K classes for multi-class pipelines: K // 2
malignant kinds and the rest benign kinds, each kind of one family tinted its own way
(``benign_brown``, ``benign_red``, ..., ``malignant_brown``, ...; brown is untinted). The tint is no
random draw: a kind's image is its family's image of the same random state, recoloured. Two classes
(the default) are ``benign`` and ``malignant`` as always.

Each image's randomness depends only on ``(seed, split, label, index)``: changing the
counts never changes the images already produced. Same numpy/Pillow versions and seed
give byte-identical PNG files. This is **not medical data**.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from ..atomic import write_text, write_with

__all__ = [
    "CLASSES",
    "DEFAULT_COUNTS",
    "GENERATOR_VERSION",
    "SPLITS",
    "SyntheticLesion",
    "class_names",
    "generate_dataset",
    "make_lesion",
]

CLASSES = ("benign", "malignant")
SPLITS = ("train", "val", "test")
#: images per class per split; the original project's 64 / 16 / 20 % proportions
DEFAULT_COUNTS: dict[str, int] = {"train": 32, "val": 8, "test": 10}
SPLIT_FRACTIONS = {"train": 0.64, "val": 0.16, "test": 0.20}
#: bump whenever the pixels a given (seed, split, label, index) produces change
GENERATOR_VERSION = 1
MIN_SIZE = 32
MANIFEST = "generator.json"

_CLASS_RE = re.compile(r"^(benign|malignant)(_[a-z]+)?$")
_NAME_RE = re.compile(r"^(train|val|test)_(benign|malignant)(_[a-z]+)?_\d{4,}\.png$")
#: the kinds of one family for K > 2 classes: a multiplicative RGB tint of the lesion's pigment (brown: none)
TINTS: dict[str, tuple[float, float, float] | None] = {
    "brown": None, "red": (1.25, 0.72, 0.78), "blue": (0.78, 0.95, 1.35), "dark": (0.55, 0.55, 0.6),
    "pale": (1.35, 1.3, 1.25), "yellow": (1.15, 1.15, 0.7)}
MAX_CLASSES = 2 * len(TINTS)

# RGB anchors (0..255)
_SKIN_LIGHT = np.array([236.0, 196.0, 176.0])
_SKIN_TAN = np.array([204.0, 148.0, 112.0])
_BROWN_LIGHT = np.array([168.0, 112.0, 76.0])
_BROWN_DARK = np.array([98.0, 60.0, 40.0])
_PALETTE = {
    "dark_brown": np.array([72.0, 42.0, 28.0]),
    "black": np.array([30.0, 24.0, 26.0]),
    "blue_grey": np.array([116.0, 124.0, 142.0]),
    "red": np.array([190.0, 88.0, 92.0]),
    "tan": np.array([176.0, 126.0, 90.0]),
    "white": np.array([214.0, 202.0, 204.0]),
}
_MALIGNANT_CORE = ("dark_brown", "black", "blue_grey", "red")


@dataclass(frozen=True)
class SyntheticLesion:
    """One synthetic dermoscopy image with its ground-truth lesion mask."""

    image: Image.Image  # RGB, size x size
    mask: np.ndarray  # bool (size, size), True inside the lesion
    label: str  # "benign" | "malignant", or a kind such as "malignant_red" (see class_names)


# --------------------------------------------------------------------------- helpers


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [-1, 1] (x grows right, y grows down); read-only."""
    t = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    xx, yy = np.meshgrid(t, t)
    xx.setflags(write=False)
    yy.setflags(write=False)
    return xx, yy


def _smooth(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field (~unit std): a cells x cells normal grid, bicubically upsampled."""
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    big = Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(big, dtype=np.float64)


def _smoothstep(a: np.ndarray) -> np.ndarray:
    a = np.clip(a, 0.0, 1.0)
    return a * a * (3.0 - 2.0 * a)


def _over(base: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Alpha-composite ``colour`` (RGB or HxWx3) over ``base`` with per-pixel ``weight``."""
    w = weight[..., None]
    return base * (1.0 - w) + colour * w


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


# --------------------------------------------------------------------------- shape


def _radius_profile(label: str, rng: np.random.Generator, angles: np.ndarray) -> tuple[np.ndarray, float]:
    """Border radius R(theta) on ``angles`` (normalised units) and the nominal radius."""
    if label == "benign":
        r0 = rng.uniform(0.24, 0.46)
        ks = np.array([1, 2, 3, 4])
        amps = np.array([rng.uniform(0, 0.015), rng.uniform(0, 0.10), rng.uniform(0, 0.012),
                         rng.uniform(0, 0.010)])
    else:
        r0 = rng.uniform(0.38, 0.60)
        ks = np.arange(1, 17)
        amps = np.concatenate([
            [rng.uniform(0.07, 0.16), rng.uniform(0.06, 0.18), rng.uniform(0.05, 0.12)],
            rng.uniform(0.02, 0.06, size=3),  # k = 4..6: lobes
            rng.uniform(0.0, 0.025, size=10),  # k = 7..16: ragged edge
        ])
    phases = rng.uniform(-np.pi, np.pi, size=ks.size)
    prof = 1.0 + (amps[:, None] * np.cos(ks[:, None] * angles[None, :] + phases[:, None])).sum(0)
    if label == "malignant":  # sharp notches
        for _ in range(int(rng.integers(1, 4))):
            where, depth, width = rng.uniform(-np.pi, np.pi), rng.uniform(0.08, 0.22), rng.uniform(0.05, 0.16)
            prof -= depth * np.exp(-((_wrap(angles - where) / width) ** 2))
    return r0 * np.maximum(prof, 0.35), r0


def _angular_field(rng: np.random.Generator, angles: np.ndarray, kmax: int) -> np.ndarray:
    """Smooth periodic random function of the angle, roughly in [-1, 1]."""
    ks = np.arange(1, kmax + 1)
    amps = rng.uniform(0, 1, size=kmax) / ks
    phases = rng.uniform(-np.pi, np.pi, size=kmax)
    f = (amps[:, None] * np.cos(ks[:, None] * angles[None, :] + phases[:, None])).sum(0)
    return f / max(float(np.abs(f).max()), 1e-9)


# --------------------------------------------------------------------------- layers


def _skin(rng: np.random.Generator, size: int) -> np.ndarray:
    tone = _SKIN_LIGHT + (_SKIN_TAN - _SKIN_LIGHT) * rng.uniform(0.0, 1.0)
    tone = tone + rng.normal(0.0, 5.0, size=3)  # pinkish / yellowish casts
    light = 1.0 + 0.045 * _smooth(rng, size, 4)
    blotch = 0.03 * _smooth(rng, size, 9)  # faint redness variation
    img = tone * light[..., None]
    img[..., 1] *= 1.0 - blotch
    img[..., 2] *= 1.0 - blotch
    return img


def _benign_colour(rng: np.random.Generator, size: int, rho: np.ndarray) -> np.ndarray:
    shade = _BROWN_LIGHT + (_BROWN_DARK - _BROWN_LIGHT) * rng.uniform(0.0, 1.0)
    shade = shade + rng.normal(0.0, 4.0, size=3)
    centre = rng.uniform(-0.10, 0.14)  # symmetric radial shading (darker or lighter centre)
    factor = (1.0 - centre * (1.0 - np.clip(rho, 0, 1)) ** 1.5 + 0.03 * _smooth(rng, size, 6)
              + 0.025 * _smooth(rng, size, 17))
    return shade * factor[..., None]


def _malignant_colour(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray,
                      cx: float, cy: float, r0: float, prof_at: Any) -> np.ndarray:
    base = _BROWN_LIGHT + (_BROWN_DARK - _BROWN_LIGHT) * rng.uniform(0.15, 1.0)
    base = base + rng.normal(0.0, 5.0, size=3)
    texture = 1.0 + 0.08 * _smooth(rng, size, 5) + 0.06 * _smooth(rng, size, 17)
    img = base * texture[..., None]

    names = list(rng.choice(_MALIGNANT_CORE, size=int(rng.integers(3, 5)), replace=False))
    names += list(rng.choice(list(_PALETTE), size=int(rng.integers(0, 3))))
    for name in names:
        phi = rng.uniform(-np.pi, np.pi)
        rad = rng.uniform(0.0, 0.7) * prof_at(phi)
        bx, by = cx + rad * np.cos(phi), cy + rad * np.sin(phi)
        sx, sy = r0 * rng.uniform(0.18, 0.45, size=2)
        rot = rng.uniform(-np.pi, np.pi)
        dx, dy = xx - bx, yy - by
        u = dx * np.cos(rot) + dy * np.sin(rot)
        v = -dx * np.sin(rot) + dy * np.cos(rot)
        g = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2)) + 0.3 * _smooth(rng, size, 8)
        weight = _smoothstep((g - 0.3) / 0.5) * rng.uniform(0.55, 0.9)
        colour = _PALETTE[str(name)] * rng.uniform(0.9, 1.1, size=3)
        img = _over(img, colour, weight)

    # atypical dots / globules, crowded on one side towards the periphery
    n = int(rng.integers(4, 15))
    sector = rng.uniform(-np.pi, np.pi)
    phi = sector + rng.normal(0.0, 0.7, size=n)
    rad = rng.uniform(0.35, 0.92, size=n) * np.array([prof_at(p) for p in phi])
    px, py = cx + rad * np.cos(phi), cy + rad * np.sin(phi)
    sig = rng.uniform(0.007, 0.02, size=n)
    d2 = (xx[None] - px[:, None, None]) ** 2 + (yy[None] - py[:, None, None]) ** 2
    dots = (np.exp(-0.5 * d2 / sig[:, None, None] ** 2) * rng.uniform(0.5, 0.9, size=(n, 1, 1))).max(0)
    dot_colour = _PALETTE["black"] if rng.uniform() < 0.5 else _PALETTE["dark_brown"]
    return _over(img, dot_colour, dots)


def _hairs(rng: np.random.Generator, size: int) -> np.ndarray:
    """Anti-aliased coverage (0..1) of 0-5 dark hair-like quadratic curves."""
    n = 0 if rng.uniform() < 0.35 else int(rng.integers(1, 6))
    big = 2 * size
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    t = np.linspace(0.0, 1.0, 24)[:, None]
    for _ in range(n):
        p0 = rng.uniform(-1.2, 1.2, size=2)
        ang = rng.uniform(-np.pi, np.pi)
        d = np.array([np.cos(ang), np.sin(ang)]) * rng.uniform(0.7, 1.9)
        p2 = p0 + d
        p1 = (p0 + p2) / 2 + np.array([-d[1], d[0]]) * rng.uniform(-0.35, 0.35)
        pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2
        pix = (pts + 1.0) * 0.5 * big
        draw.line([(float(x), float(y)) for x, y in pix], fill=int(rng.integers(170, 256)),
                  width=int(rng.integers(2, 4)), joint="curve")
    if n == 0:
        return np.zeros((size, size))
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


# --------------------------------------------------------------------------- public API


def class_names(n_classes: int = 2) -> tuple[str, ...]:
    """The class names of a ``n_classes`` data set, sorted: ``benign``/``malignant`` for two; otherwise
    ``n_classes - n_classes // 2`` benign kinds and ``n_classes // 2`` malignant ones (``<family>_<tint>``)."""
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or not (
            2 <= n_classes <= MAX_CLASSES):
        raise ValueError(f"classes must be an integer from 2 to {MAX_CLASSES}, got {n_classes!r}")
    if n_classes == 2:
        return CLASSES
    tints, n_malignant = list(TINTS), int(n_classes) // 2
    return tuple(sorted([f"benign_{t}" for t in tints[:n_classes - n_malignant]]
                        + [f"malignant_{t}" for t in tints[:n_malignant]]))


def _family_and_tint(label: str) -> tuple[str, tuple[float, float, float] | None]:
    if label in CLASSES:
        return label, None
    family, _, tint = label.partition("_") if isinstance(label, str) else ("", "", "")
    if family not in CLASSES or tint not in TINTS:
        raise ValueError(f"unknown label {label!r}; expected one of {CLASSES} or <benign|malignant>_<"
                         f"{'|'.join(TINTS)}>")
    return family, TINTS[tint]


def make_lesion(label: str, size: int, rng: np.random.Generator) -> SyntheticLesion:
    """Draw one synthetic lesion image of class ``label`` (see module docstring for the ABCD model).

    ``label``: ``benign``, ``malignant`` or a tinted kind ``<family>_<tint>`` (``malignant_brown`` is
    ``malignant``). Deterministic given the state of ``rng``. Raises ``ValueError`` for an unknown label or
    a size below 32 pixels.
    """
    name = label
    label, tint = _family_and_tint(label)
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    size = int(size)
    xx, yy = _grid(size)

    angles = np.linspace(-np.pi, np.pi, 721)
    prof, r0 = _radius_profile(label, rng, angles)
    room = 0.93  # keep the lesion (and its blurred edge) inside the image
    off = rng.uniform(-0.12, 0.12, size=2)
    limit = room - float(np.hypot(*off))
    if prof.max() > limit:
        scale = limit / float(prof.max())
        prof, r0 = prof * scale, r0 * scale
    cx, cy = float(off[0]), float(off[1])

    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    border = np.interp(theta, angles, prof)

    def prof_at(phi: float) -> float:
        return float(np.interp(_wrap(np.asarray(phi)), angles, prof))

    if label == "benign":
        edge = np.full_like(angles, rng.uniform(0.012, 0.03))
    else:  # partly sharp, partly blurred border
        edge = 0.012 + 0.05 * np.clip(_angular_field(rng, angles, 4), 0, 1)
    width = np.interp(theta, angles, edge)
    alpha = _smoothstep(0.5 + (border - r) / (2.0 * width))
    mask = r < border

    skin = _skin(rng, size)
    if label == "benign":
        lesion = _benign_colour(rng, size, r / border)
    else:
        lesion = _malignant_colour(rng, size, xx, yy, cx, cy, r0, prof_at)
    if tint is not None:  # a kind of its family (K > 2 classes); no random draw, so brown stays pixel-identical
        lesion = lesion * np.asarray(tint)
    # a touch of the skin's own lighting shows through the pigment
    lesion = lesion * (skin.mean(-1, keepdims=True) / skin.mean()) ** 0.5
    img = _over(skin, lesion, alpha)

    hair = _hairs(rng, size)
    hair_colour = np.array([38.0, 28.0, 24.0]) * rng.uniform(0.7, 1.3)
    img = _over(img, hair_colour, hair * rng.uniform(0.6, 0.9))

    if rng.uniform() < 0.5:  # dark dermoscope vignette in the corners
        rc = np.hypot(xx, yy)
        start = rng.uniform(1.02, 1.3)
        img = _over(img, np.array([8.0, 6.0, 6.0]), _smoothstep((rc - start) / 0.14))

    img = img + rng.normal(0.0, 2.5, size=img.shape)
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return SyntheticLesion(image=Image.fromarray(pixels), mask=mask, label=name)


def _resolve_counts(per_class: dict[str, int] | None, counts: dict[str, int] | None,
                    classes: tuple[str, ...] = CLASSES) -> dict[str, dict[str, int]]:
    if per_class is not None and counts is not None:
        raise ValueError("give either per_class or counts, not both")

    def _check(n: object, what: str) -> int:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"{what} must be a non-negative integer, got {n!r}")
        return int(n)

    if per_class is not None:  # total images of each class, split 64 / 16 / 20 %
        unknown = set(per_class) - set(classes)
        if unknown:
            raise ValueError(f"unknown label(s) {sorted(unknown)}; expected {classes}")
        out: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
        for label in classes:
            total = _check(per_class.get(label, 0), f"per_class[{label!r}]")
            train = round(total * SPLIT_FRACTIONS["train"])
            val = round(total * SPLIT_FRACTIONS["val"])
            for split, n in zip(SPLITS, (train, val, total - train - val), strict=True):
                out[split][label] = n
        return out

    counts = DEFAULT_COUNTS if counts is None else counts
    unknown = set(counts) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected {SPLITS}")
    return {s: {label: _check(counts.get(s, 0), f"counts[{s!r}]") for label in classes} for s in SPLITS}


def _readme(seed: int, size: int, counts: dict[str, dict[str, int]]) -> str:
    classes = tuple(counts[SPLITS[0]])
    if classes != CLASSES:
        return _readme_kinds(seed, size, counts, classes)
    rows = "\n".join(f"| {s} | {counts[s]['benign']} | {counts[s]['malignant']} |" for s in SPLITS)
    return f"""# Synthetic dermoscopy-like data set

**This is synthetic data, not medical data.** Every image was drawn by a program; none
shows a real patient. Do not use it to judge any real skin lesion.

- Generator: `skinonnx.data.synthetic` (version {GENERATOR_VERSION}), numpy + Pillow
- Seed: {seed}
- Image size: {size} x {size} RGB PNG (lossless)
- Layout: `<split>/<label>/<split>_<label>_<index>.png` (ImageFolder); the lesion mask of each
  image is `masks/<same relative path>` (L mode, 255 inside the lesion)
- Each image depends only on (seed, split, label, index); same seed, same files.

| split | benign | malignant |
|-------|--------|-----------|
{rows}

## How the classes differ (ABCD rule of dermoscopy)

- **A - asymmetry**: benign lesions are round or slightly oval and symmetric; malignant
  ones are lopsided and lobed.
- **B - border**: benign borders are smooth and regular; malignant borders are irregular,
  notched, partly blurred.
- **C - colour**: benign lesions have one brown shade; malignant ones show several colours
  (dark brown, black, blue-grey veil, red areas, sometimes white or tan) and atypical dots.
- **D - diameter**: malignant lesions are larger on average (the ranges overlap a little).

All images share the same skin model: skin tone with smooth low-frequency variation and
mild noise, a dark dermoscope vignette in the corners of about half of them, and hairs.
"""


def _readme_kinds(seed: int, size: int, counts: dict[str, dict[str, int]], classes: tuple[str, ...]) -> str:
    """README of a K > 2 class set: the binary README's facts plus the kinds."""
    head = _readme(seed, size, {s: {"benign": 0, "malignant": 0} for s in SPLITS}).split("| split |")[0]
    rows = "\n".join(f"| {s} | " + " | ".join(str(counts[s][c]) for c in classes) + " |" for s in SPLITS)
    malignant = [c for c in classes if c.startswith("malignant")]
    return (f"{head}| split | {' | '.join(classes)} |\n|---|{'---|' * len(classes)}\n{rows}\n\n"
            f"## {len(classes)} classes\n\nEach class is a kind of one family: `benign_*` kinds are drawn as benign "
            "lesions, `malignant_*` kinds as malignant ones (the ABCD rule of dermoscopy: asymmetry, border, colours, "
            "diameter), and the part after the underscore tints the pigment (brown: untinted). The malignancy group "
            f"is `--malignant {','.join(malignant)}`.\n")


def _expected(counts: dict[str, dict[str, int]]) -> list[tuple[str, str, int, Path]]:
    classes = list(counts[SPLITS[0]])
    return [(split, label, idx, Path(split) / label / f"{split}_{label}_{idx:04d}.png")
            for split in SPLITS for label in classes for idx in range(counts[split][label])]


def _remove_stale(root: Path, wanted: set[Path]) -> None:
    """Delete generator-named PNGs left over from an earlier run with larger counts or other classes (and a class
    folder that this leaves empty)."""
    for base in (root, root / "masks"):
        for split in SPLITS:
            if not (base / split).is_dir():
                continue
            for folder in sorted((base / split).iterdir()):
                if not folder.is_dir() or not _CLASS_RE.match(folder.name):
                    continue
                for f in folder.iterdir():
                    if _NAME_RE.match(f.name) and Path(split) / folder.name / f.name not in wanted:
                        f.unlink(missing_ok=True)
                if not any(folder.iterdir()):
                    folder.rmdir()


def _save_png(image: Image.Image, final: Path) -> None:
    write_with(final, lambda tmp: image.save(tmp, format="PNG"))


def generate_dataset(root: Path, *, per_class: dict[str, int] | None = None,
                     counts: dict[str, int] | None = None, size: int = 128, seed: int = 0,
                     progress: bool = True, classes: int = 2) -> dict:
    """Write the synthetic data set under ``root`` and return its summary.

    ``counts``: images per class for each split (default ``{"train": 32, "val": 8, "test": 10}``).
    ``per_class``: alternatively, total images per label, split 64 / 16 / 20 %.
    ``classes``: how many classes (:func:`class_names`; 2: benign and malignant).
    Layout: ``root/{train,val,test}/{benign,malignant}/<split>_<label>_<idx:04d>.png``, masks
    under ``root/masks/`` with the same relative paths, ``root/README.md`` and
    ``root/generator.json``. Every file is written atomically. When ``root`` already holds a
    complete data set with the same parameters nothing is written.

    Returns ``{"root", "size", "seed", "counts": {split: {label: n}}}``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    seed, size = int(seed), int(size)
    names = class_names(classes)
    split_counts = _resolve_counts(per_class, counts, names)
    root = Path(root)
    summary: dict[str, Any] = {"root": str(root), "size": size, "seed": seed, "counts": split_counts}
    params: dict[str, Any] = {"generator": "skinonnx.data.synthetic", "version": GENERATOR_VERSION, "size": size,
                              "seed": seed, "counts": split_counts}
    if names != CLASSES:  # a binary set's manifest stays as it always was
        params["classes"] = list(names)
        params["malignant"] = summary["malignant"] = [c for c in names if c.startswith("malignant")]
    files = _expected(split_counts)

    manifest = root / MANIFEST
    try:
        previous = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous == params and (root / "README.md").is_file() and all(
            (root / rel).is_file() and (root / "masks" / rel).is_file() for *_, rel in files):
        return summary

    # An interrupted run must never look complete: drop the manifest first, write it last.
    manifest.unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, {rel for *_, rel in files})
    for split, label, idx, rel in tqdm(files, desc="synthetic data", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, SPLITS.index(split), names.index(label), idx])
        lesion = make_lesion(label, size, rng)
        _save_png(lesion.image, root / rel)
        _save_png(Image.fromarray(lesion.mask.astype(np.uint8) * 255), root / "masks" / rel)
    write_text(root / "README.md", _readme(seed, size, split_counts))
    write_text(manifest, json.dumps(params, indent=2) + "\n")
    return summary
