"""Fixtures for `serve`: the session's 32-px model as float, uint8-input and ensemble files, and real servers
(`python cli.py serve` subprocesses on free 127.0.0.1 ports, stopped with SIGTERM by the tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.scratch import scratch_dir
from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A `serve` process; ``stop()`` sends SIGTERM and returns the exit code."""

    process: subprocess.Popen
    port: int
    log: Path
    name: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self, timeout: float = WAIT_S) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stderr(self) -> str:
        return self.log.read_text()


def start_server(onnx: Path, log: Path, *args: str, name: str | None = None, wait_ready: bool = True) -> Server:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    handle = open(log, "w")  # noqa: SIM115 - the process writes it until it is stopped
    process = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "serve", "--onnx", str(onnx), "--port",
                                str(port), "--threads", "1", "--provider", "cpu", *args], cwd=REPO, env=env,
                               stdout=handle, stderr=subprocess.STDOUT)
    server = Server(process, port, log, name or onnx.stem)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited {process.returncode}:\n{log.read_text()}")
        try:
            ready = httpx.get(f"{server.url}/v2/health/ready", timeout=WAIT_S)
            if ready.status_code == 200 or (not wait_ready and ready.status_code == 503):
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError(f"serve did not become ready in 120 s:\n{log.read_text()}")


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator:
    """``serve_process(onnx, *args)`` starts a server; every one started is stopped at the end of the test."""
    started: list[Server] = []

    def start(onnx: Path, *args: str, **kwargs) -> Server:
        server = start_server(onnx, tmp_path / f"serve-{len(started)}.log", *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(WAIT_S)


@dataclass(frozen=True)
class ModelFiles:
    float32: Path
    uint8: Path
    triton_repo: Path  # written by the same `export --triton-repo`


@pytest.fixture(scope="package")
def model_files(trained: TrainedModel, request: pytest.FixtureRequest) -> ModelFiles:
    """The session weights exported once with --embed-preprocessing and --triton-repo: the float file, its
    uint8-input twin and a Triton repository of the float file."""
    out = scratch_dir(request, "serve-models") / "skin.onnx"
    run_cli("export", "--checkpoint", trained.checkpoint, "--output", out, "--data", trained.data,
            "--parity-images", "2", "--embed-preprocessing", "--triton-repo", out.parent / "triton")
    return ModelFiles(out, out.with_name("skin.uint8.onnx"), out.parent / "triton")


@pytest.fixture(scope="package")
def ensemble_file(request: pytest.FixtureRequest, synthetic_data: Path) -> Path:
    """A 2-fold, 1-epoch cross-validation run at 32 px exported as an ensemble (member_probabilities output)."""
    work = scratch_dir(request, "serve-cv")
    run_cli("train", "--data", synthetic_data, "--weights", "none", "--epochs", "1", "--batch-size", "8",
            "--image-size", "32", "--quiet", "--lr", "1e-3", "--folds", "2", "--name", "cv", "--runs-dir",
            work / "runs")
    out = work / "ens.onnx"
    run_cli("export", "--run", work / "runs" / "cv", "-o", out, "--parity-images", "2")
    return out


def synthetic_images(trained: TrainedModel) -> list[Path]:
    return sorted((trained.data / "test").rglob("*.png"))
