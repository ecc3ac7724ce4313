"""Data audit (torch-free): duplicates and train/test leakage, image quality, likely label errors, the report."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    run="run_audit", label_issues="rank_label_issues read_out_of_fold AuditError", quality="find_quality_issues",
    planted="plant",
)
