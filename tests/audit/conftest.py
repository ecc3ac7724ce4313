"""Fixtures for the audit tests: a small generated data set, and a per-test image cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.scratch import scratch_dir


@pytest.fixture(autouse=True)
def image_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own cache: never the user's ~/.cache, never another test's results."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("SKINONNX_CACHE_DIR", str(folder))
    return folder


@pytest.fixture(scope="package")
def generated(request: pytest.FixtureRequest) -> Path:
    """Distinct generated lesions at 96 px (split folders), never modified: copy it with `fresh_copy`."""
    from skinonnx.data.synthetic import generate_dataset

    root = scratch_dir(request, "audit-data")
    generate_dataset(root, counts={"train": 16, "val": 4, "test": 6}, size=96, seed=11, progress=False)
    return root


@pytest.fixture
def fresh_copy(generated: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(generated, target)
    return target
