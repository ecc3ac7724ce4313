"""Hyperparameter search (`tune`): a search space, an Optuna study, the Ray Tune engine; trains through `fit`."""

from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    space="SearchSpace load_space default_space",
    study="run_study",
)
