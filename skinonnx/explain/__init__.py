"""Explanations: Grad-CAM (torch) and the pointing game (no torch); overlays are drawn by the leaf
``skinonnx.overlay``, shared with `predict --cam` and the `test` report."""

from .._lazy import lazy_exports

_EXPORTS = {
    "explain_files": "run",
    "GradCam": "gradcam",
    "score_image": "pointing_game",
    "MaskIndex": "pointing_game",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
