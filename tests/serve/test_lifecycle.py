"""Operations: SIGTERM finishes the request in flight and exits 0; readiness only after warm-up; the JSON
access log; the CLI's refusals."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.waits import POLL_S, WAIT_S

from ..badfiles import cli_error
from ..conftest import TrainedModel
from .conftest import synthetic_images

pytestmark = pytest.mark.slow


def test_sigterm_during_a_request_lets_it_finish_and_exits_0(trained: TrainedModel, serve_process) -> None:
    # the batcher holds a lone request up to 5 s waiting for company; SIGTERM is sent once /metrics shows it
    # waiting (an event, not a sleep), so it lands while the request is in flight however slow the machine;
    # a request that was answered before it was seen waiting is simply sent again
    server = serve_process(trained.onnx, "--max-wait-ms", "5000", "--max-batch", "8")
    image = synthetic_images(trained)[0].read_bytes()
    deadline = time.monotonic() + WAIT_S
    while True:
        result: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda r=result: r.setdefault(
            "r", httpx.post(f"{server.url}/classify", content=image, timeout=WAIT_S)))
        thread.start()
        while thread.is_alive() and "skinonnx_queue_depth 1.0" not in httpx.get(f"{server.url}/metrics",
                                                                                timeout=WAIT_S).text:
            time.sleep(POLL_S)
        if thread.is_alive():
            break
        assert time.monotonic() < deadline, "never saw a request waiting in the batcher"
    assert server.process.poll() is None
    server.process.send_signal(signal.SIGTERM)
    thread.join(WAIT_S)
    assert result["r"].status_code == 200 and "probability" in result["r"].json()
    assert server.process.wait(WAIT_S) == 0
    with pytest.raises(httpx.TransportError):  # and it is gone
        httpx.get(f"{server.url}/v2/health/live", timeout=WAIT_S)


def test_access_log_is_one_json_object_per_request(trained: TrainedModel, serve_process) -> None:
    server = serve_process(trained.onnx)
    httpx.post(f"{server.url}/classify", content=b"junk", timeout=WAIT_S)
    httpx.get(f"{server.url}/v2/models/{server.name}", timeout=WAIT_S)
    assert server.stop() == 0
    records = [json.loads(line) for line in server.stderr().splitlines() if line.startswith("{")]
    bad = next(r for r in records if r["path"] == "/classify")
    assert bad["status"] == 400 and bad["error"] == "bad_image" and bad["method"] == "POST" and bad["ms"] > 0
    assert any(r["path"] == f"/v2/models/{server.name}" and r["status"] == 200 for r in records)


def test_readiness_is_false_until_the_session_is_warmed_up(trained: TrainedModel) -> None:
    """In process (the warm-up is made to wait): ready 503 and inference refused until warm-up ends."""
    from skinonnx.deploy.runtime import OnnxClassifier
    from skinonnx.deploy.serving.app import create_app
    from skinonnx.deploy.serving.local import LocalBackend
    from skinonnx.deploy.serving.model import ServedModel
    from skinonnx.deploy.serving.settings import ServeSettings

    gate = threading.Event()
    model = ServedModel(OnnxClassifier(trained.onnx, "cpu", threads=1), "m")
    real_warm_up = model.warm_up
    model.warm_up = lambda: (gate.wait(WAIT_S), real_warm_up())  # type: ignore[method-assign]
    settings = ServeSettings("m", access_log=False)
    backend = LocalBackend(model, settings)
    app = create_app(backend, settings)
    image = synthetic_images(trained)[0].read_bytes()

    async def scenario() -> None:
        await backend.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/v2/health/live")).status_code == 200
            assert (await client.get("/v2/health/ready")).json() == {"ready": False}
            refused = await client.post("/classify", content=image)
            assert refused.status_code == 503 and refused.json()["kind"] == "not_ready"
            gate.set()
            for _ in range(300):
                if backend.ready:
                    break
                await asyncio.sleep(0.1)
            assert (await client.get("/v2/health/ready")).status_code == 200
            assert (await client.post("/classify", content=image)).status_code == 200
        await backend.stop()

    asyncio.run(scenario())


def test_cli_refusals_are_one_line_errors(trained: TrainedModel, tmp_path: Path) -> None:
    cli_error("serve", "--onnx", trained.onnx, "--replicas", "2", code=2)
    (tmp_path / "short").write_text("abc\n")
    cli_error("serve", "--onnx", trained.onnx, "--token-file", tmp_path / "short", says=["at least 16"])
    cli_error("serve", "--onnx", tmp_path / "missing.onnx", says=["not found"])
    cli_error("serve", "--onnx", trained.onnx, "--model-name", "a/b", says=["model name"])
