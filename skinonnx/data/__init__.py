"""Data: layout discovery and splits, safe image decoding, the one preprocessing definition, synthetic data.

No torch."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    layouts="discover LabeledData Sample SPLITS", preprocessing="Preprocessing", synthetic="generate_dataset",
    images="load_rgb is_image_file IMAGE_EXTENSIONS DEFAULT_MAX_PIXELS",
)
