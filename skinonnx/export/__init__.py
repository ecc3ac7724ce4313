"""Export: checkpoint -> checked, parity-tested ONNX files (fp32, uint8-input, INT8).

`onnx_export`, `parity` and `uint8_input` need torch (they run the PyTorch model); `quantize` does not."""

from .._lazy import lazy_exports

_EXPORTS = {
    "export": "onnx_export",
    "check_parity": "parity",
    "ParityReport": "parity",
    "embed_preprocessing": "uint8_input",
    "quantize_model": "quantize",
    "QuantizeSettings": "quantize",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
