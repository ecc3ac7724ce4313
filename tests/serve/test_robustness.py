"""Bad input and overload never give a 500 or a hang: each a 4xx (or 503) naming the problem; the token."""

from __future__ import annotations

import concurrent.futures
import json
import socket
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.waits import WAIT_S

from ..badfiles import jpeg_bytes, png_bytes, rgb_pattern
from ..conftest import TrainedModel

pytestmark = pytest.mark.slow


def _v2(name: str = "input", shape: list | None = None, datatype: str = "FP32", count: int | None = None) -> dict:
    shape = shape if shape is not None else [1, 3, 32, 32]
    n = count if count is not None else int(np.prod(shape))
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": [0.0] * n}]}


def test_every_bad_input_gets_its_4xx_naming_the_problem(trained: TrainedModel, serve_process) -> None:
    server = serve_process(trained.onnx, "--max-body-mb", "0.5", "--model-name", "skin")
    good_jpeg = jpeg_bytes(rgb_pattern(64, 64))
    bomb = png_bytes(30000, 30000, 1, 0, row=bytes(30000 // 8))  # ~110 KB on the wire, 900 MP decoded
    cases = [
        ("/classify", {"content": b"this is not an image"}, 400, "bad_image", "not a supported image"),
        ("/classify", {"content": good_jpeg[: len(good_jpeg) // 2]}, 400, "bad_image", "truncated"),
        ("/classify", {"content": bomb}, 400, "bad_image", "decompression bomb"),
        ("/classify", {"content": b""}, 400, "empty_body", "no image"),
        ("/classify", {"content": b"\xff" * 600_000}, 413, "body_too_large", "over the limit"),
        ("/classify", {"files": {"a": ("a.jpg", good_jpeg), "b": ("b.jpg", good_jpeg)}}, 400, "bad_multipart",
         "exactly one file"),
        ("/v2/models/skin/infer", {"json": _v2(shape=[1, 3, 32])}, 400, "wrong_shape", "[1, 3, 32]"),
        ("/v2/models/skin/infer", {"json": _v2(shape=[1, 3, 16, 16])}, 400, "wrong_shape", "axis 2 must be 32"),
        ("/v2/models/skin/infer", {"json": _v2(count=5)}, 400, "wrong_shape", "needs 3072 values"),
        ("/v2/models/skin/infer", {"json": _v2(shape=[17, 3, 32, 32])}, 400, "wrong_shape", "1 to 16 rows"),
        ("/v2/models/skin/infer", {"json": _v2(datatype="INT64")}, 400, "wrong_datatype", "FP32"),
        ("/v2/models/skin/infer", {"json": _v2(name="pixels")}, 400, "wrong_input_name", "'input'"),
        ("/v2/models/skin/infer", {"json": {**_v2(), "outputs": [{"name": "nope"}]}}, 400, "unknown_output",
         "no output 'nope'"),
        ("/v2/models/skin/infer", {"content": b"{not json"}, 400, "bad_json", "not valid JSON"),
        ("/v2/models/skin/infer", {"json": {"inputs": "x"}}, 400, "bad_request", "'inputs' list"),
        ("/v2/models/other/infer", {"json": _v2()}, 404, "unknown_model", "unknown model 'other'"),
        ("/v2/models/skin/versions/7/infer", {"json": _v2()}, 404, "unknown_version", "no version '7'"),
        ("/classify?cam=maybe", {"content": good_jpeg}, 400, "bad_parameter", "cam"),
    ]
    for path, body, status, kind, says in cases:
        response = httpx.post(server.url + path, timeout=WAIT_S, **body)
        assert response.status_code == status, (path, kind, response.text)
        problem = response.json()
        assert problem["kind"] == kind and says in problem["error"], (path, problem)
    assert httpx.get(f"{server.url}/v2/models/other", timeout=WAIT_S).status_code == 404
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=WAIT_S).status_code == 200
    metrics = httpx.get(f"{server.url}/metrics", timeout=WAIT_S).text
    assert 'skinonnx_errors_total{kind="bad_image"} 3.0' in metrics
    assert 'status="500"' not in metrics
    assert server.stop() == 0


def test_body_limit_is_enforced_before_the_body_is_read(trained: TrainedModel, serve_process) -> None:
    """A declared oversize body is refused at once (the client has sent only its headers); a chunked one as
    soon as it passes the limit."""
    server = serve_process(trained.onnx, "--max-body-mb", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S) as sock:  # a client that stops sending
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: 100000000\r\n\r\n" + b"\xff" * 1000)
        head = b""
        while b"body_too_large" not in head:  # the answer comes while 99.99 % of the body is still unsent
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        head = head.decode("latin-1")
    assert head.startswith("HTTP/1.1 413") and "body_too_large" in head

    def chunks():
        for _ in range(64):
            yield b"\xff" * 65536

    response = httpx.post(f"{server.url}/classify", content=chunks(), timeout=WAIT_S)
    assert response.status_code == 413 and response.json()["kind"] == "body_too_large"
    assert server.stop() == 0


def test_overload_gets_503_with_retry_after_and_the_server_stays_responsive(trained: TrainedModel,
                                                                            serve_process) -> None:
    server = serve_process(trained.onnx, "--max-queue", "2", "--max-batch", "1", "--max-wait-ms", "0",
                           "--no-access-log")
    x = np.zeros((1, 3, 32, 32), np.float32).tolist()
    payload = {"inputs": [{"name": "input", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": x}]}

    def call(_: int) -> httpx.Response:
        return httpx.post(f"{server.url}/v2/models/{server.name}/infer", json=payload, timeout=WAIT_S)

    with concurrent.futures.ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(call, range(48)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) > 0, codes
    refused = [r for r in responses if r.status_code == 503]
    assert all(r.headers.get("retry-after") == "1" and r.json()["kind"] == "overloaded" for r in refused)
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=WAIT_S).status_code == 200
    assert call(0).status_code == 200
    assert server.stop() == 0


def test_bearer_token_is_enforced_and_no_inference_runs_without_it(trained: TrainedModel, serve_process,
                                                                   tmp_path: Path) -> None:
    token = "s3cret-token-for-the-test"
    (tmp_path / "token").write_text(token + "\n")
    server = serve_process(trained.onnx, "--token-file", str(tmp_path / "token"))
    image = jpeg_bytes(rgb_pattern(64, 64))
    good = {"Authorization": f"Bearer {token}"}

    def rows_run() -> float:
        text = httpx.get(f"{server.url}/metrics", headers=good, timeout=WAIT_S).text
        return float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("skinonnx_inference_rows_total")))

    before = rows_run()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}, {"Authorization": "Basic x"}):
        for method, path, body in (("POST", "/classify", image), ("POST", f"/v2/models/{server.name}/infer",
                                                                   json.dumps(_v2()).encode()),
                                   ("GET", f"/v2/models/{server.name}", None), ("GET", "/metrics", None)):
            response = httpx.request(method, server.url + path, content=body, headers=headers, timeout=WAIT_S)
            assert response.status_code == 401 and response.json()["kind"] == "unauthorized", (path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
    assert rows_run() == before  # nothing reached the model
    assert httpx.get(f"{server.url}/v2/health/ready", timeout=WAIT_S).status_code == 200  # probes stay open
    assert httpx.post(f"{server.url}/classify", content=image, headers=good, timeout=WAIT_S).status_code == 200
    assert rows_run() == before + 1
    assert server.stop() == 0
