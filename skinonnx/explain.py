"""`explain`: Grad-CAM overlays for image files, from a checkpoint, at the model's own preprocessing.

Each image is decoded, resized and centre-cropped exactly as the model sees it
(:class:`Preprocessing`); the overlay shows that crop beside the heatmap of the target class
(default: the positive class). With lesion masks (``--masks``) it also plays the pointing
game: does the heatmap's peak fall on the lesion? (:mod:`skinonnx.localization`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .atomic import write_text, write_with
from .checkpoint import load_checkpoint, model_from_checkpoint
from .errors import ImageError, SkinOnnxError
from .gradcam import GradCam
from .images import DEFAULT_MAX_PIXELS, load_rgb
from .localization import ImageScore, MaskIndex, PointingSummary, score_image
from .preprocessing import Preprocessing

DISPLAY_MIN = 256  # overlays of small models are enlarged (nearest neighbour) to at least this
HEAT_ALPHA = 0.55  # opacity of the hottest colour; cold regions stay transparent


@dataclass
class Explanation:
    path: str
    overlay: Path
    target: str
    probability: float  # calibrated p(target)
    prediction: str  # by the checkpoint's decision threshold
    grid: tuple[int, int]  # (rows, cols) of the Grad-CAM map
    peak: tuple[float, float]  # x, y of the strongest cell's centre, cropped-image pixels
    peak_source: tuple[float, float]  # the same point in the decoded image's pixels
    empty: bool  # the map is all zero: no evidence for the class anywhere
    score: ImageScore | None = None  # pointing game (with --masks and a mask for this image)

    @property
    def hit(self) -> bool | None:
        return None if self.score is None else self.score.hit


@dataclass
class ExplainResult:
    explanations: list[Explanation] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pointing: PointingSummary | None = None
    csv_path: Path | None = None


def _overlay_names(paths: Sequence[Path], out_dir: Path) -> list[Path]:
    """``<out>/<stem>.gradcam.png``; repeated stems get -2, -3, ..."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(out_dir / (f"{stem}.gradcam.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.gradcam.png"))
    return names


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


def explain_files(checkpoint: str | os.PathLike[str], paths: Sequence[Path], out_dir: str | os.PathLike[str], *,
                  target_class: str | None = None, batch_size: int = 8, device: str = "auto",
                  masks: str | os.PathLike[str] | None = None, tolerance: float = 0.0,
                  max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True) -> ExplainResult:
    """Write one overlay PNG per readable image and ``explanations.csv`` into ``out_dir``."""
    from tqdm import tqdm

    from .train import resolve_device

    state = load_checkpoint(checkpoint)
    classes = list(state["classes"])
    target_name = target_class or classes[int(state["positive_index"])]
    if target_name not in classes:
        raise SkinOnnxError(f"--class {target_name!r} is not one of the model's classes {classes}")
    target = classes.index(target_name)
    pos = int(state["positive_index"])
    temperature = float((state.get("calibration") or {}).get("temperature", 1.0))
    threshold = float((state.get("decision") or {}).get("threshold", 0.5))
    prep = Preprocessing.from_dict(state["preprocessing"])
    dev = resolve_device(device)
    cam = GradCam(model_from_checkpoint(state).to(dev))
    mask_index = MaskIndex(Path(masks)) if masks is not None else None
    out = Path(out_dir)
    names = _overlay_names(paths, out)
    result = ExplainResult()
    scored = []
    bar = tqdm(total=len(paths), unit="img", desc="explain", disable=not progress, leave=False)
    for start in range(0, len(paths), batch_size):
        items = []
        for path, name in zip(paths[start:start + batch_size], names[start:start + batch_size], strict=True):
            try:
                decoded = load_rgb(path, max_pixels=max_pixels, draft_size=prep.resize_size)
            except ImageError as exc:
                result.skipped.append((str(path), exc.problem))
                continue
            items.append((path, name, decoded, prep.center_crop(prep.resize(decoded))))
        bar.update(min(batch_size, len(paths) - start))
        if not items:
            continue
        batch = torch.from_numpy(np.stack([prep.normalize(crop) for *_, crop in items])).to(dev)
        maps = cam(batch, target)
        if maps.cams.shape[1] * maps.cams.shape[2] == 1:
            raise SkinOnnxError(f"at image_size {prep.image_size} the last block's map is 1x1: Grad-CAM has no "
                                "spatial information (needs image_size >= 64)")
        probs = _softmax(maps.logits / temperature)
        for (path, name, decoded, crop), heat, peak, p in zip(items, maps.normalized(), maps.peaks(prep.image_size),
                                                               probs, strict=True):
            peak_xy = (float(peak[0]), float(peak[1]))
            peak_source = prep.crop_point_to_source(*peak_xy, decoded.size)
            prediction = classes[pos] if p[pos] >= threshold else classes[1 - pos]
            explanation = Explanation(str(path), name, target_name, float(p[target]), prediction,
                                      (heat.shape[0], heat.shape[1]), peak_xy, peak_source, empty=not heat.max() > 0)
            if mask_index is not None:
                mask = mask_index.load(path)
                if mask is not None:
                    explanation.score = score_image(prep, decoded.size, mask, peak_source, tolerance,
                                                    empty=explanation.empty)
                    scored.append(explanation.score)
            caption = (f"{path.name}: p({target_name}) = {explanation.probability:.3f}, predicted {prediction}"
                       f"\nGrad-CAM for '{target_name}', layer4 {heat.shape[0]}x{heat.shape[1]}, "
                       f"{prep.image_size}px crop" + ("; no evidence for this class" if explanation.empty else ""))
            panel = render_overlay(crop, heat, peak_xy, caption)
            write_with(name, lambda tmp, panel=panel: panel.save(tmp, format="PNG"))
            result.explanations.append(explanation)
    bar.close()
    if scored:
        result.pointing = PointingSummary.from_scores(scored, tolerance)
    if result.explanations:
        result.csv_path = out / "explanations.csv"
        write_text(result.csv_path, _csv(result.explanations))
    return result


def _csv(rows: Sequence[Explanation]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "overlay", "class", "probability", "prediction", "grid", "peak_x", "peak_y",
                     "peak_source_x", "peak_source_y", "peak_on_lesion"])
    for r in rows:
        writer.writerow([r.path, r.overlay, r.target, f"{r.probability:.6f}", r.prediction, f"{r.grid[0]}x{r.grid[1]}",
                         f"{r.peak[0]:.1f}", f"{r.peak[1]:.1f}", f"{r.peak_source[0]:.1f}", f"{r.peak_source[1]:.1f}",
                         "" if r.hit is None else int(r.hit)])
    return buf.getvalue()


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
