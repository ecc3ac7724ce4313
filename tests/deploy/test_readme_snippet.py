"""The README's inline embedding snippet, run as printed, gives predict's label and probability."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli
from .test_embedding import expected_label

ROOT = Path(__file__).resolve().parents[2]
START = "```python\nimport json, numpy as np, onnxruntime as ort\n"


def readme_snippet() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    begin = text.index(START) + len("```python\n")
    return text[begin:text.index("```", begin)]


def test_readme_snippet_matches_predict(trained: TrainedModel, tmp_path: Path) -> None:
    png = sorted((trained.data / "test" / "malignant").glob("*.png"))[0]
    big = tmp_path / "big.jpg"  # large enough that predict decodes it at a reduced DCT scale (draft)
    Image.open(png).convert("RGB").resize((1100, 800), Image.Resampling.BICUBIC).save(big, quality=92)
    tall = tmp_path / "tall.png"  # portrait: the other branch of the resize
    Image.open(png).convert("RGB").resize((70, 90), Image.Resampling.BICUBIC).save(tall)
    images = [png, big, tall]
    out = tmp_path / "p.json"
    run_cli("predict", "--onnx", trained.onnx, *images, "-o", out, "--provider", "cpu", "--quiet")
    predicted = {row["path"]: row for row in json.loads(out.read_text())["predictions"]}
    snippet = readme_snippet()
    assert '"exports/model.onnx"' in snippet and '"lesion.jpg"' in snippet
    for image in images:
        code = snippet.replace('"exports/model.onnx"', repr(str(trained.onnx))).replace('"lesion.jpg"',
                                                                                       repr(str(image)))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=WAIT_S)
        label, probability = done.stdout.rstrip("\n").split("\t")
        row = predicted[str(image)]
        assert label == expected_label(row)  # the graph's decision: a class name, or the refusal
        assert abs(float(probability) - row["p_malignant"]) <= 1e-6, (image.name, probability, row["p_malignant"])


def test_readme_snippet_refuses_what_predict_refuses(trained: TrainedModel, tmp_path: Path) -> None:
    """Non-lesion photos (scikit-image's) and generated images: the snippet prints predict's decision, the
    refusal included, because both read the graph's ``label``/``in_distribution`` outputs."""
    from skinonnx.data.far_ood import write_far_ood_images
    from skinonnx.deploy.contract import OOD_REFUSAL

    images = write_far_ood_images(tmp_path / "far", size=96)[::4]
    out = tmp_path / "far.json"
    run_cli("predict", "--onnx", trained.onnx, *images, "-o", out, "--provider", "cpu", "--quiet")
    predicted = {row["path"]: row for row in json.loads(out.read_text())["predictions"]}
    refused = [p for p, row in predicted.items() if row["prediction"] == OOD_REFUSAL]
    assert refused, "the session model refuses none of the far-OOD images: nothing to compare"
    for image in images:
        code = readme_snippet().replace('"exports/model.onnx"', repr(str(trained.onnx))).replace(
            '"lesion.jpg"', repr(str(image)))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=WAIT_S)
        assert done.stdout.split("\t")[0] == predicted[str(image)]["prediction"], image.name
