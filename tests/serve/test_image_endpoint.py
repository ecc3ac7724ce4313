"""The image endpoint answers exactly what `predict` answers for the same file, raw body or multipart."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli
from .conftest import ModelFiles, synthetic_images

pytestmark = pytest.mark.slow


def _predict_rows(onnx: Path, images: list[Path], out: Path) -> dict[str, dict]:
    run_cli("predict", *images, "--onnx", onnx, "-o", out, "--provider", "cpu", "--quiet")
    return {Path(r["path"]).name: r for r in json.loads(out.read_text())["predictions"]}


def _check_against_predict(server, onnx: Path, images: list[Path], tmp_path: Path) -> None:
    rows = _predict_rows(onnx, images, tmp_path / "predictions.json")
    for i, image in enumerate(images):
        data = image.read_bytes()
        response = (httpx.post(f"{server.url}/classify", content=data, timeout=WAIT_S) if i % 2 == 0 else
                    httpx.post(f"{server.url}/classify", files={"image": (image.name, data)}, timeout=WAIT_S))
        assert response.status_code == 200, response.text
        answer, row = response.json(), rows[image.name]
        positive = answer["positive_class"]
        assert abs(answer["probability"] - row[f"p_{positive}"]) <= 1e-6
        assert answer["label"] == row["prediction"] and answer["threshold"] == row["threshold"]
        assert answer["model"]["name"] == server.name and len(answer["model"]["sha256"]) == 64


def test_image_endpoint_equals_predict_on_real_isic_images(real_data: Path, model_files: ModelFiles,
                                                           serve_process, tmp_path: Path) -> None:
    images = [p for label in ("benign", "malignant") for p in sorted((real_data / "test" / label).glob("*.jpg"))[:3]]
    for onnx in (model_files.float32, model_files.uint8):
        server = serve_process(onnx)
        _check_against_predict(server, onnx, images, tmp_path)
        assert server.stop() == 0


def test_image_endpoint_equals_predict_on_synthetic_images_with_cam_overlay(trained: TrainedModel,
                                                                            serve_process, tmp_path: Path) -> None:
    server = serve_process(trained.onnx)
    images = synthetic_images(trained)[:6]
    _check_against_predict(server, trained.onnx, images, tmp_path)
    with_cam = httpx.post(f"{server.url}/classify?cam=true", content=images[0].read_bytes(), timeout=WAIT_S).json()
    overlay = Image.open(io.BytesIO(base64.b64decode(with_cam["cam_overlay_png"])))
    assert overlay.format == "PNG" and overlay.width > 2 * 256  # [crop | crop + heat], enlarged to >= 256 px
    assert server.stop() == 0
