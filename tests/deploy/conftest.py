"""Fixtures shared by the embedding targets' tests (browser, C++)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinonnx.data.preprocessing import Preprocessing
from skinonnx.training.checkpoint import load_checkpoint, save_checkpoint
from tests.scratch import scratch_dir

from ..conftest import TrainedModel
from .test_embedding import Exported, _export


@pytest.fixture(scope="package")
def model128(trained: TrainedModel, request: pytest.FixtureRequest) -> Exported:
    """The session weights at 128 px, float and uint8 files: ISIC's 256-px JPEGs are then decoded at full scale
    and resized 256 -> 146 (no JPEG draft), so an app that reproduces the pixels reproduces `predict` exactly."""
    work = scratch_dir(request, "model128")
    state = {k: v for k, v in load_checkpoint(trained.checkpoint).items() if k not in ("format", "format_version")}
    state["preprocessing"] = Preprocessing.for_size(128).to_dict()
    save_checkpoint(state, work / "best128.pt")
    return _export(work / "best128.pt", work / "model128.onnx", trained.data)


@pytest.fixture
def isic_images(real_data: Path) -> list[Path]:
    """Eight real ISIC test JPEGs, four per class."""
    return [p for label in ("benign", "malignant") for p in sorted((real_data / "test" / label).glob("*.jpg"))[:4]]
