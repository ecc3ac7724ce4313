"""The Open Inference Protocol, proven with Triton's client against real `serve` processes: every output of the
float, uint8-input and ensemble files equals in-process ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import ModelFiles
from .triton_suite import check_v2_server

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", ["float32", "uint8"])
def test_tritonclient_infer_equals_in_process_onnx_runtime(variant: str, model_files: ModelFiles,
                                                          serve_process) -> None:
    onnx = getattr(model_files, variant)
    server = serve_process(onnx)
    check_v2_server(server.address, onnx.stem, onnx)
    assert server.stop() == 0


def test_tritonclient_on_the_fold_ensemble_with_member_probabilities(ensemble_file: Path, serve_process) -> None:
    server = serve_process(ensemble_file, "--model-name", "ens")
    check_v2_server(server.address, "ens", ensemble_file)
    assert server.stop() == 0
