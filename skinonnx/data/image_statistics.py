"""Cheap per-image statistics that move when the input data drifts (new camera, lighting, focus). No torch.

Computed on the image resized to ``SIDE`` x ``SIDE`` (bilinear), so every source is measured at one scale
whatever its resolution: mean red/green/blue (a colour cast moves them), contrast (standard deviation of
the grey level), sharpness (mean absolute 4-neighbour Laplacian of the grey level: blur lowers it) and
saturation (mean HSV saturation). `test` writes them per image into its report folder
(``image_statistics.csv``) so `monitor` can compare a new batch with the test images.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from ..atomic import write_text
from ..errors import DataError
from .images import DEFAULT_MAX_PIXELS, load_rgb

SIDE = 128
STATISTICS: tuple[str, ...] = ("mean_red", "mean_green", "mean_blue", "contrast", "sharpness", "saturation")
FILE_NAME = "image_statistics.csv"


def image_statistics(img: Image.Image | NDArray[np.uint8]) -> dict[str, float]:
    """The :data:`STATISTICS` of one RGB image (PIL image or (H, W, 3) uint8 array)."""
    pil = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
    rgb = np.asarray(pil.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR), dtype=np.float64)
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    laplacian = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
    high, low = rgb.max(axis=2), rgb.min(axis=2)
    saturation = np.divide(high - low, high, out=np.zeros_like(high), where=high > 0)
    return {"mean_red": float(rgb[..., 0].mean()), "mean_green": float(rgb[..., 1].mean()),
            "mean_blue": float(rgb[..., 2].mean()), "contrast": float(grey.std()),
            "sharpness": float(np.abs(laplacian).mean()), "saturation": float(saturation.mean())}


def file_statistics(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, float]:
    """:func:`image_statistics` of an image file (decoded safely; raises ImageError for a bad file)."""
    return image_statistics(load_rgb(path, max_pixels=max_pixels, draft_size=SIDE))


def write_statistics_csv(target: Path, paths: Sequence[str], rows: Sequence[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", *STATISTICS])
    for path, row in zip(paths, rows, strict=True):
        writer.writerow([path, *(f"{row[k]:.6f}" for k in STATISTICS)])
    write_text(target, buf.getvalue())


def read_statistics_csv(path: Path) -> dict[str, NDArray[np.float64]]:
    """Columns of an ``image_statistics.csv`` as arrays; DataError for a malformed file."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [k for k in STATISTICS if k not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {missing}")
            rows = list(reader)
        return {k: np.array([float(r[k]) for r in rows]) for k in STATISTICS}
    except (OSError, ValueError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read image statistics ({exc})") from None
