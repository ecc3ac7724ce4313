"""The FastAPI application: Open Inference Protocol v2 routes, the image endpoint, health, metrics.

The same app runs under uvicorn (:mod:`.local`, dynamic batching by :mod:`.batcher`) and as a Ray Serve
ingress (:mod:`.ray_engine`, Ray Serve's own batching): only the :class:`Backend` differs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from ... import __version__
from ...cpus import physical_cores
from .metrics import ServeMetrics
from .model import ServedModel
from .problems import RequestProblem, bad_request
from .settings import ServeSettings
from .v2 import HEADER_LENGTH, encode_infer_response, parse_infer_request

VERSION = "1"  # the one model version this server holds
ACCESS_LOG = logging.getLogger("skinonnx.serve.access")
PUBLIC_PATHS = frozenset({"/v2/health/live", "/v2/health/ready"})  # probes need no token
PROBLEM_KEY = "skinonnx.problem"  # scope key: the refused request's kind, for the access log


class Backend(Protocol):
    model: ServedModel
    metrics: ServeMetrics

    @property
    def ready(self) -> bool: ...

    @property
    def queue_depth(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def infer(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...


def create_app(backend: Backend, settings: ServeSettings) -> FastAPI:
    """The service for one model; ``backend.start()`` runs at startup (warm-up: readiness turns true after it)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await backend.start()
        try:
            yield
        finally:
            await backend.stop()
            decoders.shutdown(wait=True)

    app = FastAPI(title="skinonnx", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    model, metrics = backend.model, backend.metrics
    _add_error_handlers(app, metrics)
    # decoding (Pillow releases the GIL) on as many threads as cores: more only makes them fight the model
    decoders = ThreadPoolExecutor(max_workers=max(2, physical_cores()), thread_name_prefix="decode")

    async def off_loop(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(decoders, fn, *args)

    def check_model(name: str, version: str | None = None) -> None:
        if name != settings.model_name:
            raise RequestProblem(404, "unknown_model", f"unknown model '{name}'; this server has "
                                                       f"'{settings.model_name}'")
        if version is not None and version != VERSION:
            raise RequestProblem(404, "unknown_version", f"model '{name}' has no version '{version}' (it has "
                                                         f"'{VERSION}')")

    def check_ready() -> None:
        if not backend.ready:
            raise RequestProblem(503, "not_ready", "the model is still loading or warming up",
                                 {"Retry-After": "1"})

    @app.get("/v2")
    async def server_metadata() -> dict:
        return {"name": "skinonnx", "version": __version__, "extensions": ["binary_tensor_data"]}

    @app.get("/v2/health/live")
    async def live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return JSONResponse({"ready": backend.ready}, status_code=200 if backend.ready else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict:
        check_model(name, version)
        return model.metadata([VERSION])

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> Response:
        check_model(name, version)
        return JSONResponse({"name": name, "ready": backend.ready}, status_code=200 if backend.ready else 503)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> Response:
        check_model(name, version)
        check_ready()
        body = await read_body(request, settings.max_body_bytes)
        parsed = parse_infer_request(body, request.headers.get(HEADER_LENGTH), model.input, model.outputs)
        model.check_tensor(parsed.tensor, max_rows=settings.max_batch)
        outputs = await backend.infer(parsed.tensor)
        metrics.observe_decisions(outputs)
        content, headers = encode_infer_response(name, VERSION, parsed, outputs, model.outputs)
        return Response(content, headers=headers, media_type=headers.pop("Content-Type"))

    @app.post("/classify")
    async def classify(request: Request, cam: bool = False) -> Response:
        """POST an image (raw body, or multipart/form-data with one file) -> label, probability, threshold."""
        check_ready()
        data = await image_bytes(request, settings.max_body_bytes)
        rows = await off_loop(model.image_input, data, settings.max_pixels)
        outputs = await backend.infer(rows)
        metrics.observe_decisions(outputs)
        answer = model.classification(outputs)
        if cam:
            png = await off_loop(model.cam_png, outputs, data, settings.max_pixels)
            answer["cam_overlay_png"] = base64.b64encode(png).decode("ascii")
        return JSONResponse(answer)

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.queue_depth.set(backend.queue_depth)
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return _Observed(app, metrics, settings)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (Content-Length is checked before reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> RequestProblem:
    return RequestProblem(413, "body_too_large", f"the request body is over the limit of {limit:,} bytes "
                                                 f"({size:,}+ bytes); raise it with --max-body-mb")


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image of a raw-body or multipart upload."""
    body = await read_body(request, limit)
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        body = await _multipart_file(request, body)
    if not body:
        raise bad_request("empty_body", "no image in the request: POST the image bytes as the body, or as a file "
                                        "in multipart/form-data")
    return body


async def _multipart_file(request: Request, body: bytes) -> bytes:
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=8, max_fields=8)
    except Exception as exc:  # python-multipart's parse errors, Starlette's limits: the client's bytes
        raise bad_request("bad_multipart", f"cannot read the multipart body ({exc})") from None
    files = [v for v in form.values() if hasattr(v, "read")]
    if len(files) != 1:
        raise bad_request("bad_multipart", f"multipart/form-data needs exactly one file field; got {len(files)}")
    data = await files[0].read()
    await form.close()
    return data


def _add_error_handlers(app: FastAPI, metrics: ServeMetrics) -> None:
    def problem_response(request: Request, status: int, kind: str, message: str,
                         headers: dict[str, str] | None = None) -> Response:
        request.scope[PROBLEM_KEY] = kind
        metrics.errors.labels(kind).inc()
        return JSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)

    @app.exception_handler(RequestProblem)
    async def on_problem(request: Request, exc: RequestProblem) -> Response:
        return problem_response(request, exc.status, exc.kind, exc.message, exc.headers)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        kind = {404: "no_such_route", 405: "method_not_allowed"}.get(exc.status_code, "http")
        return problem_response(request, exc.status_code, kind, f"{exc.detail}: {request.method} {request.url.path}",
                                dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return problem_response(request, 400, "bad_parameter", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(Exception)
    async def on_failure(request: Request, exc: Exception) -> Response:
        logging.getLogger("skinonnx.serve").exception("internal error on %s %s", request.method, request.url.path)
        return problem_response(request, 500, "internal", f"internal error ({type(exc).__name__})")


class _Observed:
    """Pure ASGI wrapper: bearer token before anything runs, request metrics, one JSON access-log line each."""

    def __init__(self, app: FastAPI, metrics: ServeMetrics, settings: ServeSettings) -> None:
        self.app, self.metrics, self.settings = app, metrics, settings
        self._token = settings.token.encode() if settings.token else None
        # requests being received, decoded or waiting: bounded too, so a flood of uploads cannot pile up bodies
        # in memory ahead of the model's queue
        self._max_in_flight = 2 * settings.max_queue + settings.max_batch
        self._in_flight = 0

    def __getattr__(self, name: str):  # the wrapped app's attributes (state, routes...) stay reachable
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def observe(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        public = scope["path"] in PUBLIC_PATHS or scope["path"] == "/metrics"
        if self._token is not None and scope["path"] not in PUBLIC_PATHS and not self._authorized(scope):
            await self._refuse(scope, receive, observe, 401, "unauthorized",
                               "missing or wrong bearer token (Authorization: Bearer <token>)",
                               {"WWW-Authenticate": "Bearer"})
        elif not public and self._in_flight >= self._max_in_flight:
            await self._refuse(scope, receive, observe, 503, "overloaded", "the server is at capacity (too many "
                               "requests in flight); retry shortly", {"Retry-After": "1"})
        else:
            self._in_flight += not public
            try:
                # a failure was already answered (500) and logged by the app's handler; uvicorn need not repeat it
                with contextlib.suppress(Exception):
                    await self.app(scope, receive, observe)
            finally:
                self._in_flight -= not public
        seconds = time.perf_counter() - start
        route = scope.get("route")
        label = getattr(route, "path", "unmatched")
        self.metrics.requests.labels(label, str(status["code"])).inc()
        self.metrics.latency.labels(label).observe(seconds)
        if self.settings.access_log:
            self._log(scope, status["code"], seconds)

    async def _refuse(self, scope, receive, send, status: int, kind: str, message: str,
                      headers: dict[str, str]) -> None:
        scope[PROBLEM_KEY] = kind
        self.metrics.errors.labels(kind).inc()
        await JSONResponse({"error": message, "kind": kind}, status_code=status, headers=headers)(scope, receive, send)

    def _authorized(self, scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, token = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._token or b"")
        return False

    def _log(self, scope, status: int, seconds: float) -> None:
        headers = dict(scope["headers"])
        client = scope.get("client") or ("", 0)
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), "client": client[0],
                  "method": scope["method"], "path": scope["path"], "status": status, "ms": round(seconds * 1e3, 3),
                  "bytes_in": int(headers.get(b"content-length", b"0") or 0)
                  if headers.get(b"content-length", b"").isdigit() else None}
        if scope.get(PROBLEM_KEY):
            record["error"] = scope[PROBLEM_KEY]
        ACCESS_LOG.info(json.dumps(record, separators=(",", ":")))
