"""`export --fp16` and `export --ort-format`: converted copies that keep the contract and the answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from skinonnx.data.preprocessing import Preprocessing
from tests.scratch import scratch_dir

from ..conftest import TrainedModel, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(trained: TrainedModel, request: pytest.FixtureRequest) -> Path:
    out = scratch_dir(request, "variants") / "model.onnx"
    result = run_cli("export", "--checkpoint", trained.checkpoint, "--output", out, "--data", trained.data,
                     "--parity-images", "4", "--embed-preprocessing", "--fp16", "--ort-format")
    assert "fp16 vs fp32 on" in result.output and "metadata: all" in result.output
    return out


def _meta(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def _run(model: Path, x: np.ndarray, name: str = "input") -> list[np.ndarray]:
    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(["logits", "probabilities"],
                                                                                     {name: x})


def _test_images(trained: TrainedModel) -> list[Path]:
    return sorted((trained.data / "test").rglob("*.png"))


def test_fp16_file_is_half_precision_with_float32_io_and_close_answers(exported: Path, trained: TrainedModel) -> None:
    half = exported.with_name("model.fp16.onnx")
    proto = onnx.load(str(half))
    onnx.checker.check_model(proto, full_check=True)
    weights = [t for t in proto.graph.initializer if len(t.dims) == 4]  # conv kernels
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    io = {v.name: v.type.tensor_type.elem_type for v in [*proto.graph.input, *proto.graph.output]}
    decision = {"label": onnx.TensorProto.INT64, "in_distribution": onnx.TensorProto.BOOL,
                "malignant": onnx.TensorProto.BOOL}  # p_malignant stays float32
    assert io == {name: decision.get(name, onnx.TensorProto.FLOAT) for name in io}
    assert half.stat().st_size < 0.55 * exported.stat().st_size
    meta, source = _meta(half), _meta(exported)
    assert {k: v for k, v in meta.items() if k != "precision"} == source
    record = json.loads(meta["precision"])
    assert record["weights"] == "float16" and record["gate"]["label_agreement"] == 1.0
    assert "valid" in run_cli("info", half).output

    prep = Preprocessing.for_size(32)
    x = np.stack([prep.from_file(p) for p in _test_images(trained)])
    want, got = _run(exported, x), _run(half, x)
    print(f"\nfp16 vs fp32: max |Δp| = {np.abs(want[1] - got[1]).max():.2e} on {len(x)} images")
    assert np.abs(want[1] - got[1]).max() <= 0.01
    assert np.abs(want[0] - got[0]).max() > 0  # really computed in another precision


def test_fp16_gate_failure_writes_no_file(trained: TrainedModel, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    result = run_cli("export", "--checkpoint", trained.checkpoint, "--output", out, "--data", trained.data,
                     "--parity-images", "4", "--fp16", "--fp16-tolerance", "1e-12", expect=1)
    assert "fp16 gate FAILED" in result.output and "Traceback" not in result.output
    assert out.exists() and not out.with_name("m.fp16.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left behind


def test_ort_format_loads_keeps_metadata_and_outputs(exported: Path, trained: TrainedModel, tmp_path: Path) -> None:
    prep = Preprocessing.for_size(32)
    images = _test_images(trained)
    for source, name, x in [
        (exported, "input", np.stack([prep.from_file(p) for p in images])),
        (exported.with_name("model.uint8.onnx"), "image", np.stack([prep.pixels_from_file(p) for p in images])),
    ]:
        ort_file = source.with_suffix(".ort")
        assert ort_file.read_bytes()[4:8] == b"ORTM"  # a flatbuffer with the ORT file identifier, not protobuf
        session = ort.InferenceSession(str(ort_file), providers=["CPUExecutionProvider"])
        assert dict(session.get_modelmeta().custom_metadata_map) == _meta(source)
        want, got = _run(source, x, name), _run(ort_file, x, name)
        assert np.abs(want[1] - got[1]).max() <= 1e-4
        config = source.with_name(f"{source.stem}.required_operators.config").read_text()
        assert "ai.onnx;" in config and "Conv" in config
    out = tmp_path / "pred.json"
    run_cli("predict", "--onnx", exported.with_suffix(".ort"), *images, "-o", out, "--provider", "cpu", "--quiet")
    assert len(json.loads(out.read_text())["predictions"]) == len(images)
