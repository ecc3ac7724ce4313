"""Heatmap overlays as images (Pillow + matplotlib colours; no torch): a shared leaf.

Shared by Grad-CAM (`explain`, from a checkpoint), `predict --cam` (the ONNX file's ``cam`` output)
and the `test` report's thumbnails, so every heatmap in the project is drawn the same way: the
map's positive part divided by its maximum (:func:`normalize_map`), upsampled bilinearly with
half-pixel centres to the crop the model saw, coloured with matplotlib's ``jet`` and blended on
the crop with an opacity that grows with the heat (cold regions stay transparent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DISPLAY_MIN = 256  # overlays of small models are enlarged (nearest neighbour) to at least this
HEAT_ALPHA = 0.55  # opacity of the hottest colour; cold regions stay transparent


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def normalize_map(cam: np.ndarray) -> np.ndarray:
    """ReLU, then divided by the maximum: [0, 1]; an all-non-positive map stays zero (no evidence)."""
    positive = np.maximum(np.asarray(cam, np.float32), 0.0)
    peak = float(positive.max()) if positive.size else 0.0
    return positive / peak if peak > 0 else positive


def peak_point(cam: np.ndarray, image_size: int) -> tuple[float, float]:
    """x, y of the strongest cell's centre in crop pixels (the map covers the whole crop)."""
    h, w = cam.shape
    row, col = divmod(int(np.argmax(cam)), w)
    return (col + 0.5) * image_size / w, (row + 0.5) * image_size / h


def blend(crop: Image.Image, cam01: np.ndarray, alpha: float = HEAT_ALPHA) -> Image.Image:
    """The crop under the heatmap of a [0, 1] map (same size as the crop)."""
    rgb, heat = heat_colours(cam01, crop.size[0])
    weight = (alpha * heat)[..., None]
    blended = np.asarray(crop.convert("RGB"), np.float32) * (1 - weight) + rgb * weight
    return Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))


def heat_colours(cam: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Upsample a [0, 1] map to ``size`` x ``size`` (bilinear, half-pixel centres) -> (RGB, heat)."""
    import matplotlib

    heat = np.asarray(Image.fromarray(cam.astype(np.float32), "F").resize((size, size), Image.Resampling.BILINEAR))
    heat = np.clip(heat, 0.0, 1.0)
    rgb = matplotlib.colormaps["jet"](heat)[..., :3] * 255.0
    return rgb, heat


def render_overlay(crop: Image.Image, cam: np.ndarray, peak: tuple[float, float], caption: str) -> Image.Image:
    """[model input | input + heatmap] side by side, the peak circled, a caption underneath."""
    s = crop.size[0]
    scale = max(1, math.ceil(DISPLAY_MIN / s))
    d = s * scale
    base = crop.resize((d, d), Image.Resampling.NEAREST) if scale > 1 else crop
    overlay = blend(base, cam)
    draw = ImageDraw.Draw(overlay)
    px, py, r = peak[0] * scale, peak[1] * scale, max(4, d // 40)
    draw.ellipse((px - r - 1, py - r - 1, px + r + 1, py + r + 1), outline=(0, 0, 0), width=2)
    draw.ellipse((px - r, py - r, px + r, py + r), outline=(255, 255, 255), width=2)
    gap, font = 8, _font(max(12, d // 20))
    lines = caption.split("\n")
    line_h = font.getbbox("Ag")[3] + 4
    panel = Image.new("RGB", (2 * d + gap, d + line_h * len(lines) + 8), (255, 255, 255))
    panel.paste(base, (0, 0))
    panel.paste(overlay, (d + gap, 0))
    text = ImageDraw.Draw(panel)
    for i, line in enumerate(lines):
        text.text((4, d + 4 + i * line_h), line, fill=(0, 0, 0), font=font)
    return panel


def overlay_file_names(paths: Sequence[Path], out_dir: Path, suffix: str) -> list[Path]:
    """``<out>/<stem><suffix>`` per input, in order; repeated stems get -2, -3, ..."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(out_dir / (f"{stem}{suffix}" if seen[stem] == 1 else f"{stem}-{seen[stem]}{suffix}"))
    return names
