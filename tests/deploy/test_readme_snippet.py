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
        label, probability = done.stdout.split()
        row = predicted[str(image)]
        assert label == expected_label(row, knows_ood=False)  # a class name, never "other"
        assert abs(float(probability) - row["p_malignant"]) <= 1e-6, (image.name, probability, row["p_malignant"])
