"""`serve --engine ray`: the same app on Ray Serve (2 replicas on one module-scoped local Ray on 127.0.0.1):
same answers, and a replica killed under load loses no request while the deployment recovers."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.waits import WAIT_S

from ..conftest import TrainedModel
from .conftest import free_port, synthetic_images
from .triton_suite import check_v2_server

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (pip install 'skinonnx[scale]')")
pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class RayService:
    url: str
    port: int
    onnx: Path


@pytest.fixture(scope="module")
def ray_service(trained: TrainedModel) -> Iterator[RayService]:
    from ray import serve

    from skinonnx.deploy.ray_predict import start_ray
    from skinonnx.deploy.serving.ray_engine import deploy
    from skinonnx.deploy.serving.settings import ServeSettings

    ray, started = start_ray(None, num_cpus=2)
    port = free_port()
    settings = ServeSettings("skin", max_batch=8, max_wait_ms=5, access_log=False)
    url = deploy(trained.onnx, settings, host="127.0.0.1", port=port, provider="cpu", replicas=2)
    _wait_ready(url)
    try:
        yield RayService(url, port, trained.onnx)
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()


def _wait_ready(url: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=WAIT_S).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError("Ray Serve deployment not ready")


def _classify(url: str, data: bytes, retries: int = 8) -> tuple[httpx.Response, int]:
    """An idempotent client: a 5xx or a dropped connection is retried (what 'retried or answered' means)."""
    for attempt in range(retries + 1):
        try:
            response = httpx.post(f"{url}/classify", content=data, timeout=WAIT_S)
            if response.status_code < 500:
                return response, attempt
        except httpx.TransportError:
            pass
        time.sleep(0.3 * (attempt + 1))
    raise AssertionError(f"no answer after {retries} retries")


def test_ray_serve_answers_like_the_local_server(ray_service: RayService, trained: TrainedModel,
                                                 serve_process) -> None:
    check_v2_server(f"127.0.0.1:{ray_service.port}", "skin", ray_service.onnx)
    local = serve_process(trained.onnx, "--model-name", "skin")
    for image in synthetic_images(trained)[:4]:
        on_ray = httpx.post(f"{ray_service.url}/classify", content=image.read_bytes(), timeout=WAIT_S).json()
        here = httpx.post(f"{local.url}/classify", content=image.read_bytes(), timeout=WAIT_S).json()
        assert abs(on_ray["probability"] - here["probability"]) <= 1e-6 and on_ray["label"] == here["label"]
    bad = httpx.post(f"{ray_service.url}/classify", content=b"junk", timeout=WAIT_S)
    assert bad.status_code == 400 and bad.json()["kind"] == "bad_image"
    assert local.stop() == 0


def test_a_replica_killed_under_load_loses_no_request_and_recovers(ray_service: RayService,
                                                                   trained: TrainedModel) -> None:
    import ray
    from ray import serve

    images = [p.read_bytes() for p in synthetic_images(trained)[:6]]
    expected = {i: httpx.post(f"{ray_service.url}/classify", content=d, timeout=WAIT_S).json()["probability"]
                for i, d in enumerate(images)}
    replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                if "SERVE_REPLICA" in a["name"] and "SkinOnnxReplica" in a["name"]]
    assert len(replicas) == 2, replicas
    victim = ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"])
    n = 48

    def one(i: int) -> tuple[int, httpx.Response, int]:
        response, retries = _classify(ray_service.url, images[i % len(images)])
        return i, response, retries

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        concurrent.futures.wait(futures, timeout=WAIT_S, return_when=concurrent.futures.FIRST_COMPLETED)
        ray.kill(victim, no_restart=True)  # answers are flowing: the kill lands under load
        results = [f.result(timeout=WAIT_S) for f in futures]
    assert len(results) == n
    for i, response, _ in results:
        assert response.status_code == 200, response.text
        assert abs(response.json()["probability"] - expected[i % len(images)]) <= 1e-6
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        status = serve.status().applications["skinonnx"]
        deployment = status.deployments["SkinOnnxReplica"]
        if status.status == "RUNNING" and deployment.replica_states.get("RUNNING", 0) == 2:
            break
        time.sleep(1)
    else:
        raise AssertionError(f"the deployment did not recover: {serve.status()}")
    _wait_ready(ray_service.url)
    assert _classify(ray_service.url, images[0])[0].json()["probability"] == pytest.approx(expected[0], abs=1e-6)
