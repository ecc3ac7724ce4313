"""`serve` on this machine: one ONNX Runtime session behind the dynamic batcher, run by uvicorn.

SIGTERM/SIGINT: uvicorn stops accepting connections and waits for the requests in flight (they wait on the
batcher, which keeps running); then the app's shutdown drains the batcher, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys

import numpy as np

from .app import create_app
from .batcher import DynamicBatcher
from .metrics import ServeMetrics
from .model import ServedModel
from .settings import ServeSettings

GRACEFUL_SHUTDOWN_S = 30  # the longest a request in flight may keep a stopping server alive


class LocalBackend:
    """The model in this process; ``ready`` only after the batcher runs and the session is warmed up."""

    def __init__(self, model: ServedModel, settings: ServeSettings) -> None:
        self.model, self.settings, self.metrics = model, settings, ServeMetrics()
        self._batcher: DynamicBatcher | None = None
        self._ready = False

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def queue_depth(self) -> int:
        return self._batcher.depth if self._batcher else 0

    async def start(self) -> None:
        self._batcher = DynamicBatcher(self.model.run, max_batch=self.settings.max_batch,
                                       max_wait_s=self.settings.max_wait_ms / 1e3, max_queue=self.settings.max_queue,
                                       on_batch=self.metrics.observe_batch)
        self._batcher.start()
        asyncio.get_running_loop().create_task(self._warm_up())

    async def _warm_up(self) -> None:
        try:
            await asyncio.to_thread(self.model.warm_up)
        except Exception as exc:  # the server stays unready: its probe says so, the log says why
            logging.getLogger("skinonnx.serve").error("warm-up failed, the model stays not ready: %s", exc)
            return
        self._ready = True

    async def stop(self) -> None:
        self._ready = False
        if self._batcher is not None:
            await self._batcher.stop()

    async def infer(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        assert self._batcher is not None, "infer before start"
        return await self._batcher.submit(rows)


def configure_access_log(enabled: bool) -> None:
    """JSON lines on stderr, one per request (the message is the JSON; no other decoration)."""
    log = logging.getLogger("skinonnx.serve.access")
    log.setLevel(logging.INFO if enabled else logging.WARNING)
    log.propagate = False
    if enabled and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)


def bind(host: str, port: int) -> socket.socket:
    """Listen on ``host:port`` (0: any free port) before uvicorn starts, so a taken port is one clear error."""
    from ...errors import SkinOnnxError

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise SkinOnnxError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (pick another --port or "
                            "--host)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run_local(model: ServedModel, settings: ServeSettings, *, host: str, port: int, echo=print) -> None:
    """Serve until SIGTERM/SIGINT; returns normally after a graceful shutdown."""
    import uvicorn

    configure_access_log(settings.access_log)
    sock = bind(host, port)
    app = create_app(LocalBackend(model, settings), settings)
    config = uvicorn.Config(app, access_log=False, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False)
    server = uvicorn.Server(config)
    bound = sock.getsockname()[1]
    echo(f"serving '{settings.model_name}' ({model.path}) on http://{host}:{bound} "
         f"(v2: /v2/models/{settings.model_name}/infer, images: /classify, /metrics); SIGTERM or Ctrl-C stops")
    # uvicorn re-raises the signal it caught once it has shut down gracefully; with these no-op handlers in
    # place that re-raise lands here harmlessly and `serve` exits 0 after a clean stop
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
