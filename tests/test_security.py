"""Security guard: no code path may unpickle a file with anything but ``torch.load(weights_only=True)``.

A static scan of the package's syntax trees (not a text grep, so aliases and line breaks don't hide a
call), plus a self-test proving the scan catches each forbidden form.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .badfiles import REPO

UNSAFE_CALLS = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("_pickle", "load"), ("_pickle", "loads"),
    ("cPickle", "load"), ("cPickle", "loads"), ("dill", "load"), ("dill", "loads"), ("joblib", "load"),
    ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"), ("yaml", "unsafe_load"),
    ("pandas", "read_pickle"), ("torch", "load"), ("numpy", "load"),
}


def unsafe_loads(source: str) -> list[str]:
    """Return 'line: call' for every unpickling call that is not provably safe."""
    tree = ast.parse(source)
    modules: dict[str, str] = {}  # local name -> real module (import torch as t)
    imported: dict[str, tuple[str, str]] = {}  # local name -> (module, attr) (from pickle import loads)
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                modules[alias.asname or alias.name] = alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                imported[alias.asname or alias.name] = (node.module.split(".")[0], alias.name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            target = (modules.get(func.value.id, func.value.id), func.attr)
        elif isinstance(func, ast.Name) and func.id in imported:
            target = imported[func.id]
        else:
            continue
        target = ("numpy", target[1]) if target[0] == "np" else target
        if target not in UNSAFE_CALLS:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        if target == ("torch", "load"):
            flag = keywords.get("weights_only")
            if isinstance(flag, ast.Constant) and flag.value is True:
                continue
        if target == ("numpy", "load"):
            flag = keywords.get("allow_pickle")
            if flag is None or (isinstance(flag, ast.Constant) and flag.value is False):
                continue
        problems.append(f"{node.lineno}: {target[0]}.{target[1]}")
    return problems


def _sources() -> list[Path]:
    files = [*sorted((REPO / "skinonnx").rglob("*.py")), REPO / "cli.py"]
    files += sorted((REPO / "benchmarks").rglob("*.py")) if (REPO / "benchmarks").is_dir() else []
    return files


def test_package_never_unpickles_unsafely() -> None:
    found = {str(p.relative_to(REPO)): bad for p in _sources() if (bad := unsafe_loads(p.read_text()))}
    assert found == {}, f"unsafe deserialisation (use torch.load(..., weights_only=True)): {found}"


def test_the_package_loads_torch_files_at_all() -> None:
    """Guard the guard: the scan really sees the package's torch.load calls (all safe)."""
    calls = sum(p.read_text().count("torch.load(") for p in _sources())
    assert calls >= 1


@pytest.mark.parametrize("snippet", [
    "import pickle\npickle.load(open(p, 'rb'))",
    "import pickle as pk\nstate = pk.loads(blob)",
    "from pickle import loads\nloads(blob)",
    "import torch\ntorch.load(p)",
    "import torch\ntorch.load(p, weights_only=False)",
    "import torch\nflag = True\ntorch.load(p, weights_only=flag)",
    "import torch as T\nT.load(\n    p,\n    map_location='cpu')",
    "from torch import load\nload(p)",
    "import numpy as np\nnp.load(p, allow_pickle=True)",
    "import joblib\njoblib.load(p)",
    "import pandas as pd\npd.read_pickle(p)",
])
def test_the_scan_catches_unsafe_forms(snippet: str) -> None:
    assert unsafe_loads(snippet)


@pytest.mark.parametrize("snippet", [
    "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
    "import numpy as np\nnp.load(p)",
    "import pickle\nexcept_type = pickle.UnpicklingError",
    "import onnx\nonnx.load(p)",
])
def test_the_scan_accepts_safe_forms(snippet: str) -> None:
    assert unsafe_loads(snippet) == []
