"""`serve` with a model of three classes: /classify gives every class, p_malignant and malignant, as `predict` does;
the v2 metadata names the classes and the malignancy group."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

from ..conftest import MulticlassModel, run_cli
from ..waits import WAIT_S

pytestmark = pytest.mark.slow


def test_classify_answers_every_class_and_the_malignancy(multiclass_model: MulticlassModel, serve_process,
                                                         tmp_path: Path) -> None:
    images = sorted((multiclass_model.data / "test").rglob("*.png"))[:4]
    out = tmp_path / "p.json"
    run_cli("predict", *images, "--onnx", multiclass_model.onnx, "-o", out, "--provider", "cpu", "--quiet")
    rows = {Path(r["path"]).name: r for r in json.loads(out.read_text())["predictions"]}
    server = serve_process(multiclass_model.onnx)
    classes = ["benign_brown", "benign_red", "malignant_brown"]
    for image in images:
        answer = httpx.post(f"{server.url}/classify", content=image.read_bytes(), timeout=WAIT_S).json()
        row = rows[image.name]
        assert list(answer["probabilities"]) == classes
        for name in classes:
            assert abs(answer["probabilities"][name] - row[f"p_{name}"]) <= 1e-6
        assert answer["p_malignant"] == pytest.approx(row["p_malignant"], abs=1e-6)
        assert answer["malignant"] == row["malignant"] and answer["label"] == row["prediction"]
        assert answer["malignant_classes"] == ["benign_red", "malignant_brown"]
        assert answer["probability"] == answer["p_malignant"]
    with_cam = httpx.post(f"{server.url}/classify?cam=true", content=images[0].read_bytes(), timeout=WAIT_S).json()
    assert Image.open(io.BytesIO(base64.b64decode(with_cam["cam_overlay_png"]))).format == "PNG"
    meta = httpx.get(f"{server.url}/v2/models/{server.name}", timeout=WAIT_S).json()
    assert meta["parameters"]["classes"] == classes
    assert meta["parameters"]["malignant_classes"] == ["benign_red", "malignant_brown"]
    assert len(meta["parameters"]["class_bias"]) == 3
    assert {o["name"] for o in meta["outputs"]} >= {"p_malignant", "malignant", "label", "in_distribution"}
    assert server.stop() == 0
