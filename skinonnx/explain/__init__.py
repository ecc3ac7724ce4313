"""Explanations: Grad-CAM (torch), heatmap overlays and the pointing game (no torch)."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    run="explain_files", gradcam="GradCam", overlay="render_overlay", pointing_game="score_image MaskIndex",
)
