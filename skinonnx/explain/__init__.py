"""Explanations: Grad-CAM (torch), heatmap overlays and the pointing game (no torch)."""

from .._lazy import lazy_exports

_EXPORTS = {
    "explain_files": "run",
    "GradCam": "gradcam",
    "render_overlay": "overlay",
    "score_image": "pointing_game",
    "MaskIndex": "pointing_game",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
