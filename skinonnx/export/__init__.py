"""Export: checkpoint -> checked, parity-tested ONNX files (fp32, uint8-input, INT8).

`onnx_export`, `parity` and `uint8_input` need torch (they run the PyTorch model); `quantize` does not."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    onnx_export="export", parity="check_parity", checks="Comparison", uint8_input="embed_preprocessing",
    quantize="quantize_model QuantizeSettings",
)
