"""What a client of the Open Inference Protocol checks, written with Triton's own client (tritonclient.http).

`check_v2_server(address, name, onnx)` runs against `serve` here; pointed at a Triton server loaded with
`export --triton-repo` it checks the same things there (docs/SERVE.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.http as triton

from skinonnx.deploy.runtime import OnnxClassifier


def model_inputs(classifier: OnnxClassifier, rows: int, seed: int = 0) -> np.ndarray:
    """A batch in the model's own input format (normalised float NCHW, or uint8 NHWC pixels)."""
    rng = np.random.default_rng(seed)
    size = classifier.preprocessing.image_size
    if classifier.takes_uint8:
        return rng.integers(0, 256, (rows, size, size, 3), dtype=np.uint8)
    return rng.normal(size=(rows, 3, size, size)).astype(np.float32)


def reference_outputs(classifier: OnnxClassifier, batch: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the file, run in this process by ONNX Runtime, by name."""
    names = [o.name for o in classifier.session.get_outputs()]
    return dict(zip(names, classifier.session.run(None, {classifier.input_name: batch}), strict=True))


def check_v2_server(address: str, name: str, onnx: Path, *, headers: dict[str, str] | None = None,
                    atol: float = 1e-5) -> None:
    client = triton.InferenceServerClient(address)
    assert client.is_server_live(headers=headers) and client.is_server_ready(headers=headers)
    assert client.is_model_ready(name, headers=headers)
    classifier = OnnxClassifier(onnx, "cpu", threads=1)
    meta = client.get_model_metadata(name, headers=headers)
    session_inputs, session_outputs = classifier.session.get_inputs(), classifier.session.get_outputs()
    assert [i["name"] for i in meta["inputs"]] == [i.name for i in session_inputs]
    assert [o["name"] for o in meta["outputs"]] == [o.name for o in session_outputs]
    datatype = "UINT8" if classifier.takes_uint8 else "FP32"
    assert meta["inputs"][0]["datatype"] == datatype
    assert meta["inputs"][0]["shape"][1:] == [d if isinstance(d, int) else -1 for d in session_inputs[0].shape[1:]]
    for rows, binary in ((1, True), (3, True), (2, False)):
        batch = model_inputs(classifier, rows, seed=rows)
        tensor = triton.InferInput(classifier.input_name, list(batch.shape), datatype)
        tensor.set_data_from_numpy(batch, binary_data=binary)
        expected = reference_outputs(classifier, batch)
        # all outputs (binary, as tritonclient asks by default), then each output alone as JSON
        result = client.infer(name, [tensor], headers=headers)
        for out, want in expected.items():
            got = result.as_numpy(out)
            assert got.shape == want.shape and got.dtype == want.dtype, out
            np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=out)
        for out, want in expected.items():
            single = client.infer(name, [tensor], outputs=[triton.InferRequestedOutput(out, binary_data=False)],
                                  headers=headers)
            np.testing.assert_allclose(single.as_numpy(out), want, rtol=0, atol=atol, err_msg=out)
            assert single.get_response()["outputs"][0]["name"] == out and len(single.get_response()["outputs"]) == 1
