"""Evaluation, the metrics room: ISIC metrics, thresholds, calibration, selective, subgroups, verdict, plots."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    metrics="binary_metrics bootstrap_ci roc_auc METRIC_NAMES evaluate_predictions",
    calibration="fit_temperature expected_calibration_error brier_score reliability_curve calibration_report",
    thresholds="choose_threshold parse_policy",
)
