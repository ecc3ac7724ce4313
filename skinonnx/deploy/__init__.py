"""Deploy: ONNX Runtime sessions and providers, the model contract and its schema, `info`, batch prediction.

No torch: a deployment needs onnxruntime, numpy and Pillow only."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    runtime="OnnxClassifier Prediction create_session", contract="ModelContract", info="inspect_model",
    predict="run_predict write_outputs",
)
