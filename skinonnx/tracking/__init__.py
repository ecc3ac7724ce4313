"""Experiment tracking (MLflow, imported lazily): runs, metrics, artifacts and registered ONNX models; no torch."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    store="resolve_uri ui_command default_uri",
    tracker="Tracker",
    run_record="open_training_run read_record",
)
