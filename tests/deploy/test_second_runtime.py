"""A second runtime: the exported files give ORT-Python's answers in OpenVINO and in onnx.reference.

Same preprocessed real ISIC images into both runtimes, so any difference is the runtime's. OpenVINO
runs with its CPU inference precision pinned to f32 (it may otherwise pick bf16/fp16 on CPUs that
have them). ``onnx.reference`` is the ONNX specification in numpy: slow (about 1 s per 32-px image),
so it sees two images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from skinonnx.data.preprocessing import Preprocessing
from tests.scratch import scratch_dir

from ..conftest import TrainedModel, run_cli

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
FLOAT_TOL = 1e-5  # fp32 and uint8 files: float round-off only (measured ~4e-7)
INT8_TOL = 0.02  # INT8: OpenVINO's integer kernels round differently from ORT's (measured ~5e-3 at T = 0.05)


@dataclass(frozen=True)
class Files:
    float_model: Path
    uint8_model: Path
    int8_model: Path
    size: int


@pytest.fixture(scope="module")
def files(trained: TrainedModel, request: pytest.FixtureRequest) -> Files:
    out = scratch_dir(request, "runtimes") / "model.onnx"
    run_cli("export", "--checkpoint", trained.checkpoint, "--output", out, "--data", trained.data,
            "--parity-images", "4", "--embed-preprocessing")
    # a gate of 0 agreement: this test is about the runtime, not about the tiny model's INT8 accuracy
    run_cli("quantize", "--onnx", out, "--data", trained.data, "--calibration-images", "8", "--min-agreement", "0",
            "--max-auc-change", "1")
    return Files(out, out.with_name("model.uint8.onnx"), out.with_name("model.int8.onnx"), 32)


@pytest.fixture
def images(real_data: Path) -> list[Path]:
    return [p for label in ("benign", "malignant") for p in sorted((real_data / "test" / label).glob("*.jpg"))[:4]]


def _inputs(model: Path, images: list[Path], size: int) -> tuple[str, np.ndarray]:
    prep = Preprocessing.for_size(size)
    if "uint8" in model.name:  # the graph crops: resized, uncropped pixels (all 37 x 37 here)
        return "image", np.stack([np.asarray(prep.load_resized(p), np.uint8) for p in images])
    return "input", np.stack([prep.from_file(p) for p in images])


def _ort(model: Path, name: str, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(["logits", "probabilities"],
                                                                                     {name: x})


def _openvino(model: Path, name: str, x: np.ndarray) -> list[np.ndarray]:
    ov = pytest.importorskip("openvino", reason="openvino is not installed: pip install -e '.[runtimes]'")
    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled({name: x})
    return [result[compiled.output(n)] for n in ("logits", "probabilities")]


def _report(runtime: str, model: Path, want: list[np.ndarray], got: list[np.ndarray], threshold: float,
            tol: float) -> None:
    dp = float(np.abs(want[1] - got[1]).max())
    dz = float(np.abs(want[0] - got[0]).max())
    print(f"\n{runtime} vs ORT-Python on {model.name}: max |Δp| = {dp:.2e}, max |Δlogit| = {dz:.2e} "
          f"({len(want[1])} real images, tolerance {tol:g})")
    assert dp <= tol
    far = np.abs(want[1][:, 1] - threshold) > tol  # labels can only flip within tol of the threshold
    np.testing.assert_array_equal((want[1][far, 1] >= threshold), (got[1][far, 1] >= threshold))


@pytest.mark.parametrize("which", ["float_model", "uint8_model", "int8_model"])
def test_openvino_matches_onnx_runtime(files: Files, images: list[Path], which: str) -> None:
    model = getattr(files, which)
    name, x = _inputs(model, images, files.size)
    threshold = float(ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
                      .get_modelmeta().custom_metadata_map["decision_threshold"])
    tol = INT8_TOL if which == "int8_model" else FLOAT_TOL
    _report("OpenVINO", model, _ort(model, name, x), _openvino(model, name, x), threshold, tol)


@pytest.mark.parametrize("which", ["float_model", "uint8_model"])
def test_onnx_reference_matches_onnx_runtime(files: Files, images: list[Path], which: str) -> None:
    from onnx.reference import ReferenceEvaluator

    model = getattr(files, which)
    name, x = _inputs(model, images[::4][:2], files.size)  # one benign, one malignant
    got = ReferenceEvaluator(str(model)).run(["logits", "probabilities"], {name: x})
    threshold = float(ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
                      .get_modelmeta().custom_metadata_map["decision_threshold"])
    _report("onnx.reference", model, _ort(model, name, x), got, threshold, FLOAT_TOL)


def test_onnx_reference_cannot_run_our_int8_files(files: Files) -> None:
    """Documented limit: onnx.reference implements DequantizeLinear only from opset 19; INT8 files are opset 17."""
    from onnx.reference import ReferenceEvaluator

    with pytest.raises(RuntimeError, match="DequantizeLinear"):
        ReferenceEvaluator(str(files.int8_model))
