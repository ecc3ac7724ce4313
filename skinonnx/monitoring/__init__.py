"""Monitoring: the `monitor` command, drift tests against the `test` reference, the drift figure. No torch."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, monitor="run_monitor", drift="drift_test DEFAULT_ALPHA")
