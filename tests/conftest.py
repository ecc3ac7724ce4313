"""Shared fixtures: a tiny synthetic data set and one trained + exported model per session."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.scratch import scratch_dir

os.environ.setdefault("OMP_NUM_THREADS", "2")
# The real ISIC images: beside the project by default, anywhere with SKINONNX_ISIC_DATA=/path/to/isic-bm.
REAL_DATA_ENV = "SKINONNX_ISIC_DATA"
REAL_DATA = Path(os.environ.get(REAL_DATA_ENV) or Path(__file__).resolve().parents[1].parent / "shared" / "data"
                 / "isic-bm")


def run_cli(*args: str, expect: int | None = 0):
    """Run the CLI in-process; assert the exit code (None: don't)."""
    from skinonnx.cli import main

    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, f"exit {result.exit_code}, output:\n{result.output}"
    return result


@pytest.fixture(scope="session", autouse=True)
def _image_cache(request: pytest.FixtureRequest):
    """`train` and `audit` cache per-image hashes (data/image_cache.py) in the session's temp folder, not ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SKINONNX_CACHE_DIR", str(scratch_dir(request, "image-cache")))
        yield


@pytest.fixture(scope="session")
def synthetic_data(request: pytest.FixtureRequest) -> Path:
    from skinonnx.data.synthetic import generate_dataset

    root = scratch_dir(request, "synthetic")
    generate_dataset(root, counts={"train": 12, "val": 6, "test": 6}, size=64, seed=3, progress=False)
    return root


@dataclass(frozen=True)
class TrainedModel:
    data: Path
    workdir: Path
    checkpoint: Path
    last: Path
    onnx: Path
    run_dir: Path


@pytest.fixture(scope="session")
def trained(request: pytest.FixtureRequest, synthetic_data: Path) -> TrainedModel:
    """Train 2 epochs at 32 px (seconds on 2 cores) into runs/t/ and export with parity."""
    work = scratch_dir(request, "work")
    run_cli("train", "--data", synthetic_data, "--weights", "none", "--epochs", "2", "--batch-size", "8",
            "--image-size", "32", "--name", "t", "--runs-dir", work / "runs", "--quiet", "--lr", "1e-3")
    weights = work / "runs" / "t" / "weights"
    onnx_path = work / "exports" / "model.onnx"
    run_cli("export", "--checkpoint", weights / "best.pt", "--output", onnx_path, "--data", synthetic_data,
            "--parity-images", "8")
    return TrainedModel(synthetic_data, work, weights / "best.pt", weights / "last.pt", onnx_path, work / "runs" / "t")


@dataclass(frozen=True)
class MulticlassModel:
    data: Path
    checkpoint: Path
    onnx: Path


@pytest.fixture(scope="session")
def multiclass_model(request: pytest.FixtureRequest) -> MulticlassModel:
    """Three synthetic classes (32 px, 1 epoch), malignancy group {benign_red, malignant_brown}, class bias tuned on
    validation, exported with parity."""
    from skinonnx.data.synthetic import generate_dataset

    work = scratch_dir(request, "k3")
    data = work / "data"
    generate_dataset(data, counts={"train": 8, "val": 4, "test": 3}, size=32, seed=2, progress=False, classes=3)
    run_cli("train", "--data", data, "--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "32",
            "--compile", "off", "--workers", "0", "--quiet", "--name", "k3", "--runs-dir", work / "runs",
            "--malignant", "malignant_brown,benign_red", "--class-bias", "val")
    checkpoint = work / "runs" / "k3" / "weights" / "best.pt"
    run_cli("export", "--checkpoint", checkpoint, "--output", work / "k3.onnx", "--data", data,
            "--parity-images", "8")
    return MulticlassModel(data, checkpoint, work / "k3.onnx")


@pytest.fixture
def real_data() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip(f"real ISIC data not present at {REAL_DATA} (set {REAL_DATA_ENV}=/path/to/isic-bm to use a "
                    "copy elsewhere)")
    return REAL_DATA


# Fixtures that train a network: a test that needs one (directly or through another fixture) is slow,
# whatever its own marks say, so `pytest -m "not slow"` never trains.
TRAINING_FIXTURES = frozenset({"trained", "off_centre_model", "multiclass_model"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        needs = set(getattr(item, "fixturenames", ()))
        if needs & TRAINING_FIXTURES:
            item.add_marker(pytest.mark.slow)
        if "real_data" in needs:
            item.add_marker(pytest.mark.realdata)
