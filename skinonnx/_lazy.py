"""Lazy re-exports for the stage packages (PEP 562).

``from skinonnx.deploy import OnnxClassifier`` works without ``import skinonnx.deploy`` loading every
module of the stage: importing one torch-free module of ``skinonnx.export`` must not pull in torch
through the package's ``__init__``, and the CLI starts fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, **modules: str) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    ``modules`` maps each submodule to the space-separated public names it defines, e.g.
    ``lazy_exports(__name__, runtime="OnnxClassifier create_session")``.
    """
    exports = {name: module for module, names in modules.items() for name in names.split()}

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
