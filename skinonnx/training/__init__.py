"""Training (PyTorch): model, loaders, the loop, post-training calibration and threshold, checkpoints."""

from .._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "fit": "loop",
    "build_model": "model",
    "load_checkpoint": "checkpoint",
    "model_from_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
