"""`export --triton-repo`: config.pbtxt parsed by Triton's own ModelConfig protobuf and checked against the file."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from skinonnx.deploy.contract import DECISION_OUTPUTS
from skinonnx.deploy.runtime import OnnxClassifier
from skinonnx.deploy.triton_repo import DEFAULT_QUEUE_DELAY_US, TRITON_TYPES, write_triton_repo
from skinonnx.hashing import file_sha256

from .conftest import ModelFiles

pytestmark = pytest.mark.slow


def _check_repo(onnx: Path, repo: Path, name: str) -> model_config_pb2.ModelConfig:
    folder = write_triton_repo(onnx, repo, name=name, max_batch=8)
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    classifier = OnnxClassifier(onnx, "cpu", threads=1)
    session = classifier.session
    assert config.name == name and config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    for declared, actual in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [t.name for t in actual]
        for tensor, arg in zip(declared, actual, strict=True):
            assert model_config_pb2.DataType.Name(tensor.data_type) == TRITON_TYPES[arg.type]
            want = [d if isinstance(d, int) else -1 for d in arg.shape[1:]]  # no batch axis
            assert list(tensor.dims) == (want or [1])  # a per-image scalar (ood_score): [1] reshaped to []
            assert tensor.HasField("reshape") == (not want)
    assert config.HasField("dynamic_batching")
    assert config.dynamic_batching.max_queue_delay_microseconds == DEFAULT_QUEUE_DELAY_US
    labelled = [t for t in config.output if t.label_filename]
    assert [t.name for t in labelled] == ["probabilities"]
    assert (folder / "labels.txt").read_text().splitlines() == list(classifier.contract.classes)
    assert file_sha256(folder / "1" / "model.onnx") == file_sha256(onnx) == config.parameters["sha256"].string_value
    assert float(config.parameters["decision_threshold"].string_value) == classifier.contract.threshold
    return config


def test_config_pbtxt_round_trips_through_tritons_model_config(model_files: ModelFiles, tmp_path: Path) -> None:
    fp32 = _check_repo(model_files.float32, tmp_path / "repo", "skin")
    assert [t.name for t in fp32.output] == ["logits", "probabilities", "cam", "ood_score", *DECISION_OUTPUTS]
    uint8 = _check_repo(model_files.uint8, tmp_path / "repo", "skin_uint8")
    assert model_config_pb2.DataType.Name(uint8.input[0].data_type) == "TYPE_UINT8"
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["skin", "skin_uint8"]


def test_export_triton_repo_writes_the_same_repository(model_files: ModelFiles) -> None:
    folder = model_files.triton_repo / "skin"
    config = text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.name == "skin" and config.platform == "onnxruntime_onnx"
    assert file_sha256(folder / "1" / "model.onnx") == file_sha256(model_files.float32)
    assert [t.name for t in config.output] == ["logits", "probabilities", "cam", "ood_score", *DECISION_OUTPUTS]


def test_ensemble_repo_lists_member_probabilities(ensemble_file: Path, tmp_path: Path) -> None:
    config = _check_repo(ensemble_file, tmp_path / "repo", "ens")
    assert "member_probabilities" in [t.name for t in config.output]


def test_serve_triton_repo_writes_the_repository_and_refuses_serving_options(model_files: ModelFiles,
                                                                             tmp_path: Path) -> None:
    from ..badfiles import cli_error
    from ..conftest import run_cli

    out = run_cli("serve", "--onnx", model_files.float32, "--triton-repo", tmp_path / "repo", "--model-name", "skin",
                  "--max-batch", "8").output
    assert "tritonserver --model-repository" in out
    config = text_format.Parse((tmp_path / "repo" / "skin" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert config.name == "skin" and config.max_batch_size == 8
    cli_error("serve", "--onnx", model_files.float32, "--triton-repo", tmp_path / "r2", "--port", "9000", code=2,
              says=["--port"])
    assert not (tmp_path / "r2").exists()
