"""Explanations: Grad-CAM (torch) and the pointing game (no torch); overlays are drawn by the leaf
``skinonnx.overlay``, shared with `predict --cam` and the `test` report."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    run="explain_files", gradcam="GradCam", pointing_game="score_image MaskIndex",
)
