"""`serve --engine ray`: the same FastAPI app as a Ray Serve deployment, batched by Ray Serve's own
``@serve.batch``, on a local Ray bound to 127.0.0.1 or on a cluster (``--address``).

Each replica holds one ONNX Runtime session and builds the app itself (``serve.ingress()`` late-bound through
``__serve_build_asgi_app__``), so the routes, errors, auth and metrics are those of `serve` on one machine. Ray
Serve restarts a replica that dies; its proxy rejects requests past ``max_queued_requests`` with 503.
Ray is imported lazily: it is an optional extra (``pip install 'skinonnx[scale]'``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from pathlib import Path

import numpy as np

from ...errors import SkinOnnxError
from .settings import ServeSettings

APP_NAME = "skinonnx"
DEPLOYMENT_NAME = "SkinOnnxReplica"


def _import_serve():
    try:
        from ray import serve
    except ImportError:
        raise SkinOnnxError("--engine ray needs Ray Serve: pip install 'skinonnx[scale]' "
                            "(or pip install 'ray[serve]')") from None
    return serve


def replica_class():
    """The deployment class (built on demand: Ray Serve's decorators import Ray)."""
    serve = _import_serve()

    @serve.ingress()
    class SkinOnnxReplica:
        """One replica: a session, the app around it, Ray Serve batching the single-image requests."""

        def __init__(self, onnx_path: str, settings: ServeSettings, provider: str, threads: int) -> None:
            from ..runtime import OnnxClassifier
            from .local import configure_access_log
            from .metrics import ServeMetrics
            from .model import ServedModel

            configure_access_log(settings.access_log)
            self.model = ServedModel(OnnxClassifier(onnx_path, provider, threads=threads), settings.model_name)
            self.metrics = ServeMetrics()
            self.settings = settings
            self._ready = False
            self._batched.set_max_batch_size(settings.max_batch)
            self._batched.set_batch_wait_timeout_s(settings.max_wait_ms / 1e3)

        def __serve_build_asgi_app__(self):
            from .app import create_app

            return create_app(self, self.settings)

        @property
        def ready(self) -> bool:
            return self._ready

        @property
        def queue_depth(self) -> int:
            return 0  # Ray Serve queues in its router and proxy (max_queued_requests), not here

        async def start(self) -> None:
            await asyncio.to_thread(self.model.warm_up)
            self._ready = True

        async def stop(self) -> None:
            self._ready = False

        async def infer(self, rows: np.ndarray) -> dict[str, np.ndarray]:
            result = await self._batched(rows)
            if isinstance(result, Exception):
                raise result
            return result

        @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.002,
                     batch_size_fn=lambda items: sum(len(rows) for rows in items))
        async def _batched(self, items: list[np.ndarray]) -> list[dict[str, np.ndarray] | Exception]:
            return await asyncio.to_thread(self._run_groups, items)

        def _run_groups(self, items: list[np.ndarray]) -> list[dict[str, np.ndarray] | Exception]:
            """One ORT call per input shape in the batch; an input the graph refuses fails only its group."""
            results: list[dict[str, np.ndarray] | Exception] = [{} for _ in items]
            groups: dict[tuple, list[int]] = {}
            for i, rows in enumerate(items):
                groups.setdefault((rows.dtype.str, rows.shape[1:]), []).append(i)
            for members in groups.values():
                stacked = np.concatenate([items[i] for i in members])
                self.metrics.observe_batch(len(stacked))
                try:
                    outputs = self.model.run(stacked)
                except Exception as exc:  # RequestProblem: a 4xx for each request of this shape
                    for i in members:
                        results[i] = exc
                    continue
                start = 0
                for i in members:
                    n = len(items[i])
                    results[i] = {k: v[start:start + n] for k, v in outputs.items()}
                    start += n
            return results

    return SkinOnnxReplica


def deploy(onnx_path: str | os.PathLike[str], settings: ServeSettings, *, host: str, port: int,
           provider: str = "auto", threads: int | None = None, replicas: int = 1, cpus: float | None = None) -> str:
    """Start Serve's HTTP proxy on ``host:port`` and deploy ``replicas`` replicas; Ray must be running.
    Returns the base URL. Each replica asks for ``cpus / replicas`` of Ray's CPUs (fractions allowed)."""
    import ray

    serve = _import_serve()
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # "Started Serve", "Application ... is ready"
    total = cpus if cpus is not None else float(ray.cluster_resources().get("CPU", 1))
    per_replica = max(0.1, total / replicas)
    ort_threads = threads or max(1, int(per_replica))
    serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "ERROR"})
    deployment = serve.deployment(
        replica_class(), name=DEPLOYMENT_NAME, num_replicas=replicas,
        ray_actor_options={"num_cpus": per_replica}, max_ongoing_requests=max(2 * settings.max_batch, 8),
        max_queued_requests=settings.max_queue, health_check_period_s=2, health_check_timeout_s=10,
        graceful_shutdown_timeout_s=30)
    provider = "cpu" if provider == "auto" else provider
    serve.run(deployment.bind(str(Path(onnx_path).resolve()), settings, provider, ort_threads), name=APP_NAME,
              route_prefix="/", blocking=False)
    return f"http://{host}:{port}"


def run_ray(onnx_path: str | os.PathLike[str], settings: ServeSettings, *, host: str, port: int,
            provider: str = "auto", threads: int | None = None, address: str | None = None, replicas: int = 1,
            echo=print) -> None:
    """Deploy on Ray Serve and wait for SIGTERM/SIGINT; then Serve drains its replicas and Ray stops."""
    from ..ray_predict import start_ray

    ray, started = start_ray(address)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    serve = _import_serve()
    try:
        try:
            url = deploy(onnx_path, settings, host=host, port=port, provider=provider, threads=threads,
                         replicas=replicas)
        except SkinOnnxError:
            raise
        except Exception as exc:  # Ray's own error types (a replica that cannot start, a port taken)
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise SkinOnnxError(f"Ray Serve could not deploy the model ({type(exc).__name__}: {first})") from None
        where = f"cluster {address}" if address else "local Ray, 127.0.0.1"
        echo(f"serving '{settings.model_name}' on Ray Serve ({where}), {replicas} replica"
             f"{'s' if replicas > 1 else ''}, at {url} (v2: /v2/models/{settings.model_name}/infer, images: "
             "/classify); SIGTERM or Ctrl-C stops")
        stop.wait()
        echo("stopping: Ray Serve finishes the requests in flight")
        serve.delete(APP_NAME)
        serve.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started:
            ray.shutdown()
