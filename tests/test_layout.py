"""The package layout is a rule, not a habit: the torch boundary is a folder boundary, stages import downwards.

docs/ARCHITECTURE.md draws the same picture; these tests keep it true.
"""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.waits import WAIT_S

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skinonnx"

# Stage packages that must import without torch, plus the torch-free modules of mixed stages and the top leaves.
TORCH_FREE_PACKAGES = ("data", "deploy", "evaluation", "reporting", "monitoring", "audit", "tracking")
TORCH_FREE_MODULES = ("skinonnx", "skinonnx.errors", "skinonnx.atomic", "skinonnx.hashing", "skinonnx.cpus",
                      "skinonnx._lazy", "skinonnx.overlay", "skinonnx.softmax", "skinonnx.cli", "skinonnx.export",
                      "skinonnx.export.quantize", "skinonnx.training.runs", "skinonnx.training.config",
                      "skinonnx.training.epoch_report", "skinonnx.training.tracked_run",
                      "skinonnx.training.pretrain_recipe", "skinonnx.training.data_checks", "skinonnx.explain",
                      "skinonnx.explain.pointing_game", "skinonnx.tuning", "skinonnx.tuning.space",
                      "skinonnx.cli.tuning_commands")

# Which stage may import which (besides the top-level leaves every stage may use).
ALLOWED = {
    "data": set(),
    "deploy": {"data"},
    "evaluation": {"data", "deploy"},
    "reporting": {"data", "deploy", "evaluation"},
    "monitoring": {"data", "deploy", "evaluation", "reporting"},
    "tracking": set(),
    "training": {"data", "evaluation", "tracking"},
    "export": {"data", "deploy", "evaluation", "reporting", "training", "tracking"},
    "tuning": {"data", "deploy", "evaluation", "training", "tracking"},
    "explain": {"data", "deploy", "training"},
    "audit": {"data", "deploy", "evaluation", "reporting"},
}
LEAVES = {"errors", "atomic", "hashing", "cpus", "_lazy", "overlay", "softmax"}

# Run in a fresh interpreter: a finder that refuses torch and names the skinonnx module that asked for it.
PROBE = textwrap.dedent("""
    import importlib, json, sys

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] not in ("torch", "torchvision"):
                return None
            frame, culprit = sys._getframe(1), None
            while frame is not None:
                module = frame.f_globals.get("__name__", "")
                if module.startswith("skinonnx"):
                    culprit = module
                    break
                frame = frame.f_back
            raise ImportError(f"torch blocked; imported by {culprit}")

    sys.meta_path.insert(0, NoTorch())
    failures = {}
    for module in json.loads(sys.argv[1]):
        try:
            importlib.import_module(module)
        except Exception as exc:  # ImportError from the finder, or a module that fails for another reason
            failures[module] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(failures))
""")


def module_names(package: str) -> list[str]:
    folder = PACKAGE / package
    names = []
    for path in sorted(folder.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def torch_free_modules() -> list[str]:
    return [m for p in TORCH_FREE_PACKAGES for m in module_names(p)] + list(TORCH_FREE_MODULES)


def torch_importers(modules: list[str]) -> dict[str, str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(modules)], cwd=ROOT, capture_output=True,
                          text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_torch_free_module_imports_without_torch() -> None:
    modules = torch_free_modules()
    assert len(modules) > 20  # the packages were found
    failures = torch_importers(modules)
    assert not failures, "torch pulled into the deploy side:\n" + "\n".join(
        f"  {module}: {reason}" for module, reason in failures.items())


def test_the_probe_names_the_module_that_imports_torch(tmp_path: Path) -> None:
    """The rule can fail: a torch-free module that imports torch is reported by name."""
    planted = PACKAGE / "deploy" / "_planted_torch_user.py"
    planted.write_text("import torch  # planted by tests/test_layout.py\n")
    try:
        failures = torch_importers(["skinonnx.deploy._planted_torch_user", "skinonnx.deploy.runtime"])
    finally:
        planted.unlink()
    assert list(failures) == ["skinonnx.deploy._planted_torch_user"]
    assert "imported by skinonnx.deploy._planted_torch_user" in failures["skinonnx.deploy._planted_torch_user"]


def _stage_imports(path: Path) -> set[str]:
    """Stages and leaves a module imports (relative imports inside skinonnx, resolved)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:-1])
            base = base[: len(base) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            if target:
                found.add(target[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skinonnx."):
            found.add(node.module.split(".")[1])
    return found


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_stages_import_only_downwards(stage: str) -> None:
    wrong = {}
    for path in (PACKAGE / stage).rglob("*.py"):
        bad = _stage_imports(path) - ALLOWED[stage] - LEAVES - {stage}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"imports against the layering of docs/ARCHITECTURE.md: {wrong}"


def test_leaves_import_no_stage() -> None:
    """A leaf is importable from every stage, so it may use other leaves only (never a stage)."""
    wrong = {}
    for leaf in sorted(LEAVES):
        path = PACKAGE / f"{leaf}.py"
        assert path.is_file(), f"leaf {leaf} listed but {path} is missing"
        bad = _stage_imports(path) - LEAVES
        if bad:
            wrong[leaf] = sorted(bad)
    assert not wrong, f"leaves importing stages: {wrong}"


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_public_names_resolve(stage: str) -> None:
    package = importlib.import_module(f"skinonnx.{stage}")
    assert package.__all__
    for name in package.__all__:
        assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018


def test_documented_entry_points() -> None:
    from skinonnx.data import Preprocessing
    from skinonnx.deploy import OnnxClassifier
    from skinonnx.evaluation import binary_metrics

    assert OnnxClassifier.__module__ == "skinonnx.deploy.runtime"
    assert Preprocessing.__module__ == "skinonnx.data.preprocessing"
    assert binary_metrics([0, 1, 1, 0], [0.1, 0.9, 0.4, 0.6], 0.5)["accuracy"] == 0.5


def _documented_modules(text: str) -> set[str]:
    """The module paths in the first column of docs/ARCHITECTURE.md's "Every module" table."""
    table = text[text.index("## Every module"):]
    return {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}


def test_architecture_names_every_module() -> None:
    documented = _documented_modules((ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8"))
    modules = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "cli"}  # stage __init__s only re-export
    missing = sorted(modules - documented)
    assert not missing, f"add a line to docs/ARCHITECTURE.md's 'Every module': {missing}"
    assert not documented - modules, f"docs/ARCHITECTURE.md names modules that are gone: {sorted(documented - modules)}"


def test_the_module_check_sees_a_missing_line() -> None:
    text = "## Every module\n| module | job |\n|---|---|\n| `data/layouts.py` | discovery |\n"
    assert _documented_modules(text) == {"data/layouts.py"}
