"""Training (PyTorch): model, loaders, the loop, post-training calibration and threshold, checkpoints."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    config="TrainConfig", loop="fit", model="build_model",
    checkpoint="load_checkpoint model_from_checkpoint save_checkpoint",
)
