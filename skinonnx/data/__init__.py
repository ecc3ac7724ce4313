"""Data: layout discovery and splits, safe image
decoding, the one preprocessing definition, the synthetic generator. No torch."""

from .._lazy import lazy_exports

_EXPORTS = {
    "discover": "layouts",
    "LabeledData": "layouts",
    "Sample": "layouts",
    "SPLITS": "layouts",
    "load_rgb": "images",
    "is_image_file": "images",
    "IMAGE_EXTENSIONS": "images",
    "DEFAULT_MAX_PIXELS": "images",
    "Preprocessing": "preprocessing",
    "generate_dataset": "synthetic",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
