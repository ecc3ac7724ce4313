"""Does a heatmap point at the lesion? The pointing game, with the baselines it must beat.

A hit: the heatmap's peak, mapped back through the crop and resize into the mask's pixels,
lands on a lesion pixel, or within ``tolerance`` (in model-input pixels) of one. Two
baselines use the same rule, so the comparison is fair:

* centre: always point at the centre of the model's crop (lesions are usually centred);
* random: a uniformly random point of the crop; its expected hit rate is the fraction of the
  crop's pixels that would hit.

An all-zero heatmap (no evidence for the class anywhere) has no peak and counts as a miss.

Masks are images with the lesion > 127 (the synthetic generator's ``masks/`` folder, or the
ISIC ``*_segmentation.png`` files); a mask may have another resolution than its image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..data.images import is_image_file, load_rgb
from ..data.preprocessing import Preprocessing
from ..errors import ImageError, SkinOnnxError

_SUFFIXES = ("_segmentation", "_mask")


def _key(path: Path) -> str:
    stem = path.stem
    for suffix in _SUFFIXES:
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return stem


class MaskIndex:
    """Masks under a folder (recursive), found by image file stem (``X.png``, ``X_segmentation.png``)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SkinOnnxError(f"--masks {root}: not a folder")
        self.root = root
        self.by_key: dict[str, list[Path]] = {}
        for path in sorted(root.rglob("*")):
            if path.is_file() and is_image_file(path):
                self.by_key.setdefault(_key(path), []).append(path)
        if not self.by_key:
            raise SkinOnnxError(f"--masks {root}: no mask images found")

    def find(self, image: Path) -> Path | None:
        found = self.by_key.get(image.stem, [])
        if len(found) > 1:
            raise SkinOnnxError(f"--masks: {len(found)} masks match {image.name} ({found[0]}, {found[1]}); "
                                "mask file names must be unique")
        return found[0] if found else None

    def load(self, image: Path) -> np.ndarray | None:
        """The boolean lesion mask for ``image``, or None when it has none."""
        path = self.find(Path(image))
        if path is None:
            return None
        try:
            return np.asarray(load_rgb(path))[..., 0] > 127
        except ImageError as exc:
            raise SkinOnnxError(f"mask {path}: {exc.problem}") from None


def _distance_map(mask: np.ndarray) -> np.ndarray:
    """Distance (mask pixels) from each pixel to the nearest lesion pixel; 0 on the lesion."""
    return ndimage.distance_transform_edt(~mask)


def _hits(dist: np.ndarray, xs: np.ndarray, ys: np.ndarray, source_size: tuple[int, int], tol: float) -> np.ndarray:
    """Points in source-image pixels -> do they land within ``tol`` mask pixels of the lesion?"""
    h, w = dist.shape
    col = np.clip(np.floor(xs * w / source_size[0]).astype(int), 0, w - 1)
    row = np.clip(np.floor(ys * h / source_size[1]).astype(int), 0, h - 1)
    return dist[row, col] <= tol


def _mask_tolerance(prep: Preprocessing, source_size: tuple[int, int], mask: np.ndarray, tolerance: float) -> float:
    """Model-input pixels -> mask pixels."""
    return tolerance * mask.shape[1] / prep.resized_size(source_size)[0]


@dataclass(frozen=True)
class ImageScore:
    hit: bool
    centre_hit: bool
    random_rate: float  # expected hit rate of a uniformly random point of the crop
    empty: bool = False  # the heatmap was all zero (then hit is False)


def score_image(prep: Preprocessing, source_size: tuple[int, int], mask: np.ndarray,
                peak_source: tuple[float, float], tolerance: float = 0.0, *, empty: bool = False) -> ImageScore:
    """The peak and both baselines on one image; ``source_size`` is the decoded image's (W, H)."""
    if not mask.any():
        return ImageScore(False, False, 0.0, empty)
    dist = _distance_map(mask)
    tol = _mask_tolerance(prep, source_size, mask, tolerance)
    s = prep.image_size
    centre = prep.crop_point_to_source(s / 2, s / 2, source_size)
    grid = np.arange(s) + 0.5
    gx, gy = np.meshgrid(grid, grid)
    sx, sy = prep.crop_point_to_source(gx.ravel(), gy.ravel(), source_size)  # type: ignore[arg-type]
    one = _hits(dist, np.array([peak_source[0], centre[0]]), np.array([peak_source[1], centre[1]]), source_size, tol)
    return ImageScore(bool(one[0]) and not empty, bool(one[1]), float(_hits(dist, sx, sy, source_size, tol).mean()),
                      empty)


@dataclass(frozen=True)
class PointingSummary:
    n_images: int
    rate: float
    centre_rate: float
    random_rate: float
    tolerance: float
    n_empty: int = 0  # all-zero maps, counted as misses

    @classmethod
    def from_scores(cls, scores: list[ImageScore], tolerance: float) -> PointingSummary:
        return cls(len(scores), float(np.mean([s.hit for s in scores])),
                   float(np.mean([s.centre_hit for s in scores])),
                   float(np.mean([s.random_rate for s in scores])), tolerance, sum(s.empty for s in scores))

    def text(self) -> str:
        empty = f" ({self.n_empty} maps without evidence for the class count as misses)" if self.n_empty else ""
        return (f"pointing game on {self.n_images} images with masks (tolerance {self.tolerance:.3g} px): peak on the "
                f"lesion {self.rate:.1%}{empty}; baselines: crop centre {self.centre_rate:.1%}, "
                f"random point {self.random_rate:.1%}")
