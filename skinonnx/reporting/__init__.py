"""Reporting: the `test` report (summary.json, report.html, model card, provenance) and `compare`. No torch."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    report="evaluate_split", model_card="render_model_card", compare="compare_models",
)
