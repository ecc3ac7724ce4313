"""Heatmap overlays as PNG-ready images (Pillow + matplotlib colours; no torch).

Shared by Grad-CAM (`explain`, from a checkpoint) and any map computed without torch.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

DISPLAY_MIN = 256  # overlays of small models are enlarged (nearest neighbour) to at least this
HEAT_ALPHA = 0.55  # opacity of the hottest colour; cold regions stay transparent



def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


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
    rgb, heat = heat_colours(cam, d)
    weight = (HEAT_ALPHA * heat)[..., None]
    blended = np.asarray(base, np.float32) * (1 - weight) + rgb * weight
    overlay = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
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
