"""Overlays of the ONNX file's own ``cam`` output (`predict --cam-dir DIR`, the `test` report); no torch.

The map comes from the deployed graph (docs/EMBEDDING.md, output ``cam``), so a deployment can show
where the malignant evidence lies without the PyTorch checkpoint. Drawn by the shared leaf
:mod:`skinonnx.overlay` exactly like `explain`'s Grad-CAM panels (for this head the two maps are
equal: docs/EXPLAIN.md).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_with
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.preprocessing import Preprocessing
from ..errors import SkinOnnxError
from ..overlay import normalize_map, peak_point, render_overlay
from .contract import CAM_OUTPUT
from .decision import label_text
from .runtime import OnnxClassifier, Prediction

CAM_SUFFIX = ".cam.png"


def relative_to_threshold(cam: np.ndarray, log_odds: float, threshold: float, temperature: float) -> np.ndarray:
    """The map shifted evenly so that its cells add up to the image's margin over the decision threshold.

    ``cam`` adds up to the raw log-odds minus the classifier's bias difference (docs/EMBEDDING.md); the
    decision is ``log_odds >= T * logit(threshold)``. Spreading the bias and that boundary evenly over the
    cells gives a map whose sum is positive exactly when the image is called positive: its positive cells
    are where the image looks more malignant than the threshold asks of an average cell. With the raw map
    a model whose threshold sits far below p = 0.5 shows no positive cell on most of its positive calls
    and none at all on its false negatives, the cases the report exists for.
    """
    t = min(max(float(threshold), 1e-12), 1.0 - 1e-12)
    boundary = temperature * math.log(t / (1.0 - t))
    return (cam + (log_odds - float(cam.sum()) - boundary) / cam.size).astype(np.float32)


def require_cam(has_cam: bool, model: str | os.PathLike[str]) -> None:
    if not has_cam:
        raise SkinOnnxError(f"{model} has no '{CAM_OUTPUT}' output (exported with --no-cam or by an older skinonnx); "
                            "re-export it with `skinonnx export` to get heatmaps")


def model_crop(path: str | os.PathLike[str], prep: Preprocessing, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The exact pixels the model saw: decoded, resized and centre-cropped by the model's preprocessing."""
    return prep.center_crop(prep.load_resized(path, max_pixels=max_pixels))


def cam_caption(name: str, probability: float, positive_class: str, prediction: str, cam: np.ndarray,
                image_size: int) -> str:
    empty = "; no evidence for this class" if not np.any(cam > 0) else ""
    return (f"{name}: p({positive_class}) = {probability:.3f}, predicted {prediction}\n"
            f"CAM from the ONNX file for '{positive_class}' vs the threshold, layer4 {cam.shape[0]}x{cam.shape[1]}, "
            f"{image_size}px crop{empty}")


def write_cam_overlay(out: Path, crop: Image.Image, cam: np.ndarray, caption: str) -> Path:
    """[crop | crop + heatmap] PNG with the peak circled (same panel as `explain`), written atomically."""
    panel = render_overlay(crop, normalize_map(cam), peak_point(cam, crop.size[0]), caption)
    return write_with(out, lambda tmp: panel.save(tmp, format="PNG"))


def write_cam(classifier: OnnxClassifier, pred: Prediction, overlay: Path, threshold: float,
              max_pixels: int) -> Path:
    """``pred``'s ``cam`` drawn over the model's crop, relative to the threshold (as above)."""
    contract, pos = classifier.contract, classifier.contract.positive_index
    multi = contract.multiclass  # more than two classes: p_malignant, and the raw map of the first group class
    prob = float(pred.p_malignant) if multi and pred.p_malignant is not None else float(pred.probabilities[pos])
    prediction = label_text(contract, int(pred.label), bool(pred.in_distribution))
    shown = pred.cam if pred.logits is None or multi else relative_to_threshold(
        pred.cam, float(pred.logits[pos] - pred.logits[1 - pos]), threshold, contract.temperature)
    crop = model_crop(pred.path, classifier.preprocessing, max_pixels)
    caption = cam_caption(Path(pred.path).name, prob, contract.positive_class, prediction, shown,
                          classifier.preprocessing.image_size)
    return write_cam_overlay(overlay, crop, shown, caption)
