"""Deploy: ONNX Runtime sessions and providers, the model contract and its schema, `info`,
batch prediction. No torch: a deployment needs onnxruntime, numpy and Pillow only."""

from .._lazy import lazy_exports

_EXPORTS = {
    "OnnxClassifier": "runtime",
    "Prediction": "runtime",
    "create_session": "runtime",
    "ModelContract": "contract",
    "inspect_model": "info",
    "collect_inputs": "predict",
    "run_predict": "predict",
    "write_outputs": "predict",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
