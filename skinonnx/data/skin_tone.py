"""An automatic skin-tone *estimate*: the Individual Typology Angle (ITA°) of the skin around a lesion. No torch.

ITA° = arctan((L* - 50) / b*) * 180 / pi in CIELAB (Chardon et al. 1991, Int J Cosmet Sci 13:191), used to
estimate skin tone on ISIC images by Kinyanjui et al. 2020 (MICCAI, "Fairness of classifiers across skin
tones in dermatology") and Groh et al. 2021. The six categories below are Chardon's, as those papers bin them.

How the skin is found (no segmentation model): the image is reduced to at most ``WORK_SIDE`` pixels a side and
converted to CIELAB (``skimage.color.rgb2lab``); skin = pixels of the outer ring (``RING`` of each side) that
are lighter than Otsu's threshold on L* over the whole image (the lesion, hair and a dermatoscope's dark
vignette fall below it). ITA is computed from the *median* L* and median b* of those pixels, which a few
hairs or reflections do not move. It is an estimate: lighting, the dermatoscope's white balance and
squashed or cropped images all shift it, and it is not a Fitzpatrick type. Report it as "estimated ITA".
"""

from __future__ import annotations

import math
import os

import numpy as np
from numpy.typing import NDArray

from .images import DEFAULT_MAX_PIXELS, load_rgb

WORK_SIDE = 128  # pixels; ITA needs colour, not detail
RING = 0.15  # share of each side that forms the border ring
MIN_SKIN_PIXELS = 50  # fewer usable pixels: no estimate (NaN)

#: (name, lower bound exclusive, upper bound inclusive) in degrees; Chardon 1991 / Kinyanjui 2020.
ITA_CATEGORIES: tuple[tuple[str, float, float], ...] = (
    ("very light", 55.0, math.inf),
    ("light", 41.0, 55.0),
    ("intermediate", 28.0, 41.0),
    ("tan", 10.0, 28.0),
    ("brown", -30.0, 10.0),
    ("dark", -math.inf, -30.0),
)
UNKNOWN = "no estimate"


def ita_degrees(lightness: float, b_star: float) -> float:
    """ITA° of one CIELAB colour; NaN when b* <= 0 (no yellow component: not a skin colour)."""
    if not (np.isfinite(lightness) and np.isfinite(b_star)) or b_star <= 0:
        return float("nan")
    return math.degrees(math.atan((lightness - 50.0) / b_star))


def ita_category(ita: float) -> str:
    """The Chardon category of an ITA° value (``"no estimate"`` for NaN)."""
    if not np.isfinite(ita):
        return UNKNOWN
    for name, low, high in ITA_CATEGORIES:
        if low < ita <= high:
            return name
    return UNKNOWN  # unreachable for finite values; kept for clarity


def skin_mask(lab: NDArray[np.float64], ring: float = RING) -> NDArray[np.bool_]:
    """Pixels of the border ring lighter than Otsu's L* threshold (the lesion and dark borders excluded)."""
    from skimage.filters import threshold_otsu

    height, width = lab.shape[:2]
    dy, dx = max(1, round(height * ring)), max(1, round(width * ring))
    border = np.ones((height, width), dtype=bool)
    border[dy:height - dy, dx:width - dx] = False
    lightness = lab[..., 0]
    if np.ptp(lightness) < 1e-6:  # a flat image has nothing to separate
        return border
    return border & (lightness > threshold_otsu(lightness))


def estimate_ita(rgb: NDArray[np.uint8] | NDArray[np.float64]) -> float:
    """Estimated ITA° of the skin around the lesion in an (H, W, 3) RGB image; NaN if no skin is found."""
    from skimage.color import rgb2lab

    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {arr.shape}")
    lab = rgb2lab(arr.astype(np.float64) / 255.0 if arr.dtype == np.uint8 else arr)
    mask = skin_mask(lab)
    if mask.sum() < MIN_SKIN_PIXELS:
        return float("nan")
    return ita_degrees(float(np.median(lab[..., 0][mask])), float(np.median(lab[..., 2][mask])))


def estimate_ita_file(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS) -> float:
    """:func:`estimate_ita` of an image file, decoded safely and reduced to at most ``WORK_SIDE`` a side."""
    img = load_rgb(path, max_pixels=max_pixels, draft_size=WORK_SIDE)
    img.thumbnail((WORK_SIDE, WORK_SIDE))
    return estimate_ita(np.asarray(img))
