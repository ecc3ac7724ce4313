"""Evaluation: ISIC metrics, thresholds, calibration, the `test` report, plots, model card. No torch."""

from .._lazy import lazy_exports

_EXPORTS = {
    "binary_metrics": "metrics",
    "bootstrap_ci": "metrics",
    "roc_auc": "metrics",
    "METRIC_NAMES": "metrics",
    "choose_threshold": "thresholds",
    "parse_policy": "thresholds",
    "fit_temperature": "calibration",
    "softmax": "calibration",
    "expected_calibration_error": "calibration",
    "brier_score": "calibration",
    "reliability_curve": "calibration",
    "evaluate_predictions": "report",
    "calibration_report": "report",
    "evaluate_split": "report",
    "render_model_card": "model_card",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
