"""`explain`: Grad-CAM overlays for image files, from a checkpoint, at the model's own preprocessing.

Each image is decoded, resized and centre-cropped exactly as the model sees it
(:class:`Preprocessing`); the overlay shows that crop beside the heatmap of the target class
(default: the positive class). With lesion masks (``--masks``) it also plays the pointing
game: does the heatmap's peak fall on the lesion? (:mod:`skinonnx.explain.pointing_game`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_text, write_with
from ..data.images import DEFAULT_MAX_PIXELS, load_rgb
from ..data.preprocessing import Preprocessing
from ..deploy.decision import DecisionRule
from ..errors import ImageError, SkinOnnxError
from ..overlay import overlay_file_names, render_overlay
from ..softmax import softmax
from ..training.checkpoint import load_checkpoint, model_from_checkpoint
from .gradcam import GradCam
from .pointing_game import ImageScore, MaskIndex, PointingSummary, score_image


@dataclass
class Explanation:
    path: str
    overlay: Path
    target: str
    probability: float  # calibrated p(target)
    prediction: str  # the ONNX file's decision (class or "not assessed"), else the checkpoint's threshold rule
    grid: tuple[int, int]  # (rows, cols) of the Grad-CAM map
    peak: tuple[float, float]  # x, y of the strongest cell's centre, cropped-image pixels
    peak_source: tuple[float, float]  # the same point in the decoded image's pixels
    empty: bool  # the map is all zero: no evidence for the class anywhere
    score: ImageScore | None = None  # pointing game (with --masks and a mask for this image)

    @property
    def hit(self) -> bool | None:
        return None if self.score is None else self.score.hit


def file_decisions(onnx_path: str | os.PathLike[str], paths: Sequence[Path], max_pixels: int) -> dict[str, str]:
    """Each readable image's decision as the ONNX file outputs it (class name or "not assessed")."""
    from ..deploy.decision import label_text
    from ..deploy.runtime import OnnxClassifier

    model = OnnxClassifier(onnx_path, "cpu")
    return {pred.path: label_text(model.contract, int(pred.label), bool(pred.in_distribution))
            for pred in model.predict_files(paths, max_pixels=max_pixels) if pred.ok}


@dataclass
class ExplainResult:
    explanations: list[Explanation] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pointing: PointingSummary | None = None
    csv_path: Path | None = None
    notes: list[str] = field(default_factory=list)

# Grad-CAM on layer4 has image_size / 32 cells per side; below 7 (224 px) a heatmap is a few blocks.
COARSE_GRID = 7


def grid_note(image_size: int) -> str | None:
    cells = image_size // 32
    if cells >= COARSE_GRID:
        return None
    return (f"warning: at {image_size} px Grad-CAM has a {cells}x{cells} grid (layer4 is 1/32 of the input): "
            f"each cell covers {100 / max(cells, 1):.0f} % of the side, so the map only says which part of the "
            f"image counted; train at >= {COARSE_GRID * 32} px for a finer map")


def explain_files(checkpoint: str | os.PathLike[str], paths: Sequence[Path], out_dir: str | os.PathLike[str], *,
                  target_class: str | None = None, batch_size: int = 8, device: str = "auto",
                  masks: str | os.PathLike[str] | None = None, tolerance: float = 0.0,
                  max_pixels: int = DEFAULT_MAX_PIXELS, progress: bool = True,
                  decision_model: str | os.PathLike[str] | None = None) -> ExplainResult:
    """Write one overlay PNG per readable image and ``explanations.csv`` into ``out_dir``.

    ``decision_model``: the ONNX export of ``checkpoint``; each image's prediction is then that file's decision
    (so an image `predict` refuses is "not assessed" here too). Without it the checkpoint's threshold rule labels
    every image, and a note says so."""
    from tqdm import tqdm

    from ..training.device import resolve_device

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
    note = grid_note(prep.image_size)
    decided = file_decisions(decision_model, paths, max_pixels) if decision_model is not None else {}
    rule = DecisionRule(pos, threshold)
    cam = GradCam(model_from_checkpoint(state).to(dev))
    mask_index = MaskIndex(Path(masks)) if masks is not None else None
    out = Path(out_dir)
    names = overlay_file_names(paths, out, ".gradcam.png")
    result = ExplainResult(notes=[note] if note else [])
    if decision_model is None:
        result.notes.append("note: no ONNX export of this checkpoint (export it, or pass --onnx): predictions use the "
                            "checkpoint's threshold without the out-of-distribution refusal")
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
        probs = softmax(maps.logits, temperature)
        for (path, name, decoded, crop), heat, peak, p in zip(items, maps.normalized(), maps.peaks(prep.image_size),
                                                               probs, strict=True):
            peak_xy = (float(peak[0]), float(peak[1]))
            peak_source = prep.crop_point_to_source(*peak_xy, decoded.size)
            prediction = decided.get(str(path)) or classes[int(rule.labels(p[None])[0])]
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
