"""The v2 tensor decoding refuses what a strict client could not read back, and `serve` says how it batches
(pure functions: no server, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from skinonnx.deploy.serving.model import TensorSpec
from skinonnx.deploy.serving.problems import RequestProblem
from skinonnx.deploy.serving.settings import ServeSettings
from skinonnx.deploy.serving.v2 import HEADER_LENGTH, parse_infer_request

INPUT = TensorSpec("input", "FP32", np.dtype(np.float32), (-1, 3, 2, 2))
OUTPUTS = [TensorSpec("probabilities", "FP32", np.dtype(np.float32), (-1, 2))]


def _json_request(text_values: str) -> bytes:
    return ('{"inputs": [{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32", "data": [' + text_values
            + "]}]}").encode()


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "-Infinity"])
def test_nan_or_infinity_in_a_json_tensor_is_a_400_naming_the_tensor(bad: str) -> None:
    # issue 29 item 9: Python's json reads NaN; the service answered 200 with bare NaN in its JSON
    values = ", ".join(["0.5"] * 11 + [bad])
    with pytest.raises(RequestProblem) as caught:
        parse_infer_request(_json_request(values), None, INPUT, OUTPUTS)
    assert caught.value.status == 400 and caught.value.kind == "non_finite"
    assert "input 'input': 1 of 12 values are NaN or infinite" in caught.value.message
    fine = parse_infer_request(_json_request(", ".join(["0.5"] * 12)), None, INPUT, OUTPUTS)
    assert fine.tensor.shape == (1, 3, 2, 2)


def test_nan_in_a_binary_tensor_is_a_400_too() -> None:
    data = np.full((1, 3, 2, 2), 0.5, np.float32)
    data[0, 1, 0, 0] = np.nan
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 3, 2, 2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": data.nbytes}}]}).encode()
    with pytest.raises(RequestProblem) as caught:
        parse_infer_request(header + data.tobytes(), str(len(header)), INPUT, OUTPUTS)
    assert caught.value.kind == "non_finite" and "'input'" in caught.value.message
    assert HEADER_LENGTH == "Inference-Header-Content-Length"


def test_the_start_line_says_batching_is_off_rather_than_up_to_1_rows() -> None:
    # issue 29 item 12: `serve --max-batch 1` said "dynamic batching: up to 1 rows"
    assert ServeSettings("m", max_batch=1).batching_text() == \
        "dynamic batching off (one row per ONNX Runtime call), queue 256"
    assert ServeSettings("m", max_batch=16).batching_text() == "dynamic batching: up to 16 rows, 0 ms wait, queue 256"
