"""`explain`: Grad-CAM overlays for image files, from a checkpoint, at the model's own preprocessing.

Each image is decoded, resized and centre-cropped exactly as the model sees it
(:class:`Preprocessing`); the overlay shows that crop beside the heatmap of the target class
(``--class``; default: two classes the positive class, more the class decided for each image: the ONNX
file's ``label``, else the checkpoint's rule with its class bias). With lesion masks (``--masks``) it also
plays the pointing game: does the heatmap's peak fall on the lesion? (:mod:`skinonnx.explain.pointing_game`).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import write_text, write_with
from ..data.images import DEFAULT_MAX_PIXELS, load_rgb
from ..data.preprocessing import Preprocessing
from ..deploy.decision import DecisionRule
from ..errors import ImageError, SkinOnnxError
from ..overlay import overlay_file_names, render_overlay
from ..softmax import softmax
from ..training.checkpoint import load_checkpoint, malignant_group, model_from_checkpoint
from .gradcam import GradCam
from .pointing_game import ImageScore, MaskIndex, PointingSummary, score_image


@dataclass
class Explanation:
    path: str
    overlay: Path
    target: str
    probability: float  # calibrated p(target)
    prediction: str  # the ONNX file's decision (class or "not assessed"), else the checkpoint's rule
    grid: tuple[int, int]  # (rows, cols) of the Grad-CAM map
    peak: tuple[float, float]  # x, y of the strongest cell's centre, cropped-image pixels
    peak_source: tuple[float, float]  # the same point in the decoded image's pixels
    empty: bool  # the map is all zero: no evidence for the class anywhere
    score: ImageScore | None = None  # pointing game (with --masks and a mask for this image)

    @property
    def hit(self) -> bool | None:
        return None if self.score is None else self.score.hit


def file_decisions(onnx_path: str | os.PathLike[str], paths: Sequence[Path], max_pixels: int
                   ) -> dict[str, tuple[int, str]]:
    """Each readable image's decision as the ONNX file outputs it: its ``label`` (a class index) and what is
    shown (the class name, or "not assessed")."""
    from ..deploy.decision import label_text
    from ..deploy.runtime import OnnxClassifier

    model = OnnxClassifier(onnx_path, "cpu")
    return {pred.path: (int(pred.label), label_text(model.contract, int(pred.label), bool(pred.in_distribution)))
            for pred in model.predict_files(paths, max_pixels=max_pixels) if pred.ok}


def checkpoint_rule(state: dict[str, Any]) -> DecisionRule:
    """The rule the checkpoint's export applies, without the out-of-distribution refusal: its threshold and (more
    than two classes) its malignancy group and class bias (none tuned: argmax)."""
    classes = list(state["classes"])
    threshold = float((state.get("decision") or {}).get("threshold", 0.5))
    if len(classes) == 2:
        return DecisionRule(int(state["positive_index"]), threshold)
    group = tuple(sorted(malignant_group(state)))
    offsets = (state.get("class_bias") or {}).get("offsets") or [0.0] * len(classes)
    return DecisionRule(group[0], threshold, None, group, tuple(float(b) for b in offsets))


@dataclass
class ExplainResult:
    explanations: list[Explanation] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    pointing: PointingSummary | None = None
    csv_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    per_image: bool = False  # each image's map is of its decided class (more than two classes, no --class)

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
    (so an image `predict` refuses is "not assessed" here too). Without it the checkpoint's rule labels
    every image, and a note says so."""
    from tqdm import tqdm

    from ..training.device import resolve_device

    state = load_checkpoint(checkpoint)
    classes = list(state["classes"])
    if target_class is not None and target_class not in classes:
        raise SkinOnnxError(f"--class {target_class!r} is not one of the model's classes {classes}")
    rule = checkpoint_rule(state)
    fixed = classes.index(target_class) if target_class is not None else (
        rule.positive_index if len(classes) == 2 else None)  # None: each image's decided class
    temperature = float((state.get("calibration") or {}).get("temperature", 1.0))
    prep = Preprocessing.from_dict(state["preprocessing"])
    dev = resolve_device(device)
    note = grid_note(prep.image_size)
    decided = file_decisions(decision_model, paths, max_pixels) if decision_model is not None else {}
    cam = GradCam(model_from_checkpoint(state).to(dev))
    mask_index = MaskIndex(Path(masks)) if masks is not None else None
    out = Path(out_dir)
    names = overlay_file_names(paths, out, ".gradcam.png")
    result = ExplainResult(notes=[note] if note else [], per_image=fixed is None)
    if decision_model is None:
        result.notes.append("note: no ONNX export of this checkpoint (export it, or pass --onnx): predictions use the "
                            "checkpoint's rule (threshold, class bias) without the out-of-distribution refusal")
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
        ordered = [decided.get(str(path)) for path, *_ in items]

        def decided_classes(logits: np.ndarray, ordered=ordered) -> list[int]:
            """The file's label per image where it has one, else the checkpoint's rule on the same logits."""
            own = rule.labels(softmax(logits, temperature))
            return [mine[0] if mine is not None else int(own[i]) for i, mine in enumerate(ordered)]

        maps = cam(batch, decided_classes if fixed is None else fixed)
        if maps.cams.shape[1] * maps.cams.shape[2] == 1:
            raise SkinOnnxError(f"at image_size {prep.image_size} the last block's map is 1x1: Grad-CAM has no "
                                "spatial information (needs image_size >= 64)")
        probs = softmax(maps.logits, temperature)
        for (path, name, decoded, crop), heat, peak, p, target in zip(
                items, maps.normalized(), maps.peaks(prep.image_size), probs, maps.targets, strict=True):
            peak_xy = (float(peak[0]), float(peak[1]))
            peak_source = prep.crop_point_to_source(*peak_xy, decoded.size)
            mine = decided.get(str(path))
            prediction = mine[1] if mine is not None else classes[int(rule.labels(p[None])[0])]
            target_name = classes[int(target)]
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
