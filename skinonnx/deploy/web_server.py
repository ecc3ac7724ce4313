"""`web`: serve the browser page (package data in skinonnx/deploy/web/) and one model on 127.0.0.1.

A fixed set of routes, nothing else: the page and its script, the shared JavaScript of the Node example
(``/lib/``), onnxruntime-web's own files (``/ort/``), ``/model.json`` (what the page should load: size,
SHA-256, download time, an INT8 variant that passed its gate) and the models by content hash
(``/models/<sha256>.onnx``: cached by the browser for a year, as immutable; ``/model.onnx`` stays for
scripts and revalidates by ETag). Every response carries the cross-origin isolation headers that
WebAssembly threads need (COOP ``same-origin``, COEP ``require-corp``) and a content security policy that
lets the page talk to this origin only. Standard library only (no torch, no onnxruntime).

onnxruntime-web is an npm package, not shipped with skinonnx: it is found in ``examples/web/node_modules``
of a source checkout, else in ``./node_modules`` of the folder ``web`` runs in.
"""

from __future__ import annotations

import errno
import http.server
import json
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError, SkinOnnxError
from ..hashing import file_sha256
from .info import inspect_model, read_header, schema_error

PAGE_DIR = Path(__file__).resolve().parent / "web"  # package data: index.html, app.js, style.css, lib/*.js
CHECKOUT_ORT = Path(__file__).resolve().parents[2] / "examples" / "web" / "node_modules" / "onnxruntime-web" / "dist"
ORT_WEB_VERSION = "1.30.0"  # the version the page is tested with (examples/web/package.json pins the same)
PAGE_FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
LIB_FILES = ("onnx_metadata.js", "pillow_resize.js", "contract.js")
ORT_FILE = re.compile(r"/ort/(ort[\w.-]*\.(?:js|mjs|wasm))")  # the wasm build's loader, worker module, binary
MODEL_FILE = re.compile(r"/models/([0-9a-f]{64})\.onnx")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".wasm": "application/wasm",
         ".onnx": "application/octet-stream", ".json": "application/json"}
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
                               "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: a URL that names its content's SHA-256 never changes: the browser keeps it a year without asking again
IMMUTABLE = "public, max-age=31536000, immutable"
#: everything else may change while the server runs: the browser keeps it but asks (ETag -> 304 Not Modified)
REVALIDATE = "no-cache"
#: answers about the current state (model.json, errors)
NO_STORE = "no-store"
#: link speeds for the page's download estimate (the page adds its own connection's estimate where the
#: browser reports one)
REFERENCE_MBITS = (10, 50, 200)
CHUNK = 1 << 20


class WebSetupError(SkinOnnxError):
    """The web example cannot be served (files missing, port taken)."""


class _Digests:
    """SHA-256 per file, recomputed only when its size or modification time changes (a 282 MB model: once)."""

    def __init__(self) -> None:
        self._known: dict[Path, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def sha256(self, path: Path) -> str:
        stat = path.stat()
        with self._lock:
            known = self._known.get(path)
            if known is not None and known[:2] == (stat.st_size, stat.st_mtime_ns):
                return known[2]
            digest = file_sha256(path)
            self._known[path] = (stat.st_size, stat.st_mtime_ns, digest)
            return digest


def download_seconds(size_bytes: int) -> dict[str, float]:
    """Seconds to download ``size_bytes`` at each reference link speed (payload only, no latency)."""
    return {f"{mbit} Mbit/s": round(size_bytes * 8 / (mbit * 1e6), 1) for mbit in REFERENCE_MBITS}


def _gate_passed(metadata: dict[str, str]) -> dict | None:
    """The ``quantization`` metadata of an INT8 file whose accuracy gate passed, else None."""
    try:
        quantization = json.loads(metadata.get("quantization", "null"))
    except ValueError:
        return None
    if isinstance(quantization, dict) and isinstance(quantization.get("gate"), dict) \
            and quantization["gate"].get("ok") is True:
        return quantization
    return None


def int8_variant(model: Path, model_sha256: str, digests: _Digests) -> dict | None:
    """An INT8 file beside ``model`` made from this very file (its metadata names our SHA-256) whose gate passed.

    Found by metadata, not by file name, so any ``quantize -o NAME`` counts and a stale INT8 file of an older
    model does not.
    """
    for candidate in sorted(model.parent.glob("*.onnx")):
        if candidate.resolve() == model or not candidate.is_file():
            continue
        try:
            quantization = _gate_passed(read_header(candidate).metadata)
        except ModelFileError:
            continue
        if quantization is None or quantization.get("source_model_sha256") != model_sha256:
            continue
        gate = quantization["gate"]
        size = candidate.stat().st_size
        return {"name": candidate.name, "path": str(candidate), "bytes": size,
                "sha256": digests.sha256(candidate), "download_seconds": download_seconds(size),
                "label_agreement": gate.get("label_agreement"), "auc_change": gate.get("auc_change"),
                "gate_images": gate.get("n_images"), "gate_split": gate.get("split")}
    return None


def find_ort_dist() -> Path | None:
    """onnxruntime-web's ``dist`` folder: the source checkout's examples/web, else ./node_modules."""
    for folder in (CHECKOUT_ORT, Path.cwd() / "node_modules" / "onnxruntime-web" / "dist"):
        if (folder / "ort.wasm.min.js").is_file():
            return folder
    return None


@dataclass
class WebApp:
    model: Path
    ort_dist: Path
    digests: _Digests

    def model_info(self) -> dict:
        """``/model.json``: what the page loads and how big it is; recomputed when the file changes."""
        sha = self.digests.sha256(self.model)
        size = self.model.stat().st_size
        quantization = _gate_passed(read_header(self.model).metadata)
        return {"name": self.model.name, "url": f"models/{sha}.onnx", "bytes": size, "sha256": sha,
                "download_seconds": download_seconds(size), "int8": quantization is not None,
                "int8_variant": None if quantization else int8_variant(self.model, sha, self.digests)}

    def _model_by_hash(self, sha: str) -> Path | None:
        if self.digests.sha256(self.model) == sha:
            return self.model
        variant = int8_variant(self.model, self.digests.sha256(self.model), self.digests)
        return Path(variant["path"]) if variant and variant["sha256"] == sha else None

    def resolve(self, url_path: str) -> tuple[Path, str] | None:
        """(file, Cache-Control) for a request path, or None (404). Only the routes above; no listing."""
        path = url_path.split("?", 1)[0].split("#", 1)[0]
        if path in PAGE_FILES:
            return PAGE_DIR / PAGE_FILES[path], REVALIDATE
        if path == "/model.onnx":
            return self.model, REVALIDATE
        if path.startswith("/lib/") and path[5:] in LIB_FILES:
            return PAGE_DIR / "lib" / path[5:], REVALIDATE
        match = MODEL_FILE.fullmatch(path)
        if match:
            found = self._model_by_hash(match.group(1))
            return (found, IMMUTABLE) if found else None
        match = ORT_FILE.fullmatch(path)
        if match:
            return self.ort_dist / match.group(1), REVALIDATE
        return None


def check_setup(model: Path) -> Path:
    """Fail before binding a port when the page, onnxruntime-web or the model is missing; return ORT's dist."""
    if not model.is_file():
        raise ModelFileError(f"ONNX model not found: {model}")
    problem = schema_error(inspect_model(model))  # the page reads the same metadata: refuse a foreign file here
    if problem is not None:
        raise problem
    missing = [p for p in (PAGE_DIR / "index.html", *(PAGE_DIR / "lib" / f for f in LIB_FILES)) if not p.is_file()]
    if missing:
        raise WebSetupError(f"this skinonnx installation lacks its web page ({missing[0]} is missing): "
                            "reinstall skinonnx")
    ort_dist = find_ort_dist()
    if ort_dist is None:
        raise WebSetupError(f"onnxruntime-web is not installed: run `npm install onnxruntime-web@{ORT_WEB_VERSION}` "
                            "in the folder you start `web` from (needs Node >= 20 and npm; in a source checkout: "
                            "`npm ci --ignore-scripts --prefix examples/web`)")
    return ort_dist


class _Handler(http.server.BaseHTTPRequestHandler):
    app: WebApp
    quiet: bool = False
    server_version = "skinonnx-web"
    sys_version = ""

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _serve(self, body: bool) -> None:
        if self.path.split("?", 1)[0] == "/model.json":
            data = json.dumps(self.app.model_info()).encode()
            self._head(200, TYPES[".json"], len(data), NO_STORE)
            if body:
                self.wfile.write(data)
            return
        found = self.app.resolve(self.path)
        if found is None or not found[0].is_file():
            self.send_error(404, "not found")
            return
        target, cache = found
        etag = f'"{self.app.digests.sha256(target)}"'
        if etag in [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]:
            self._head(304, None, None, cache, etag)
            return
        with open(target, "rb") as handle:  # streamed: a model can be hundreds of MB
            self._head(200, TYPES.get(target.suffix, "application/octet-stream"), os.fstat(handle.fileno()).st_size,
                       cache, etag)
            if body:
                try:
                    shutil.copyfileobj(handle, self.wfile, CHUNK)
                except (BrokenPipeError, ConnectionResetError):  # the tab was closed mid-download
                    self.close_connection = True

    def _head(self, code: int, content_type: str | None, length: int | None, cache: str,
              etag: str | None = None) -> None:
        self.send_response(code)
        if content_type:
            self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Cache-Control", cache)
        self.end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.error_message_format = "%(code)d %(message)s\n"
        self.error_content_type = "text/plain; charset=utf-8"
        super().send_error(code, message, explain)

    def end_headers(self) -> None:
        sent = b"".join(self._headers_buffer or [])
        for key, value in HEADERS.items():  # every response, error pages too
            self.send_header(key, value)
        if b"Cache-Control" not in sent:
            self.send_header("Cache-Control", NO_STORE)
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        if not self.quiet:
            super().log_message(format, *args)


class WebServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


def make_server(model: str | os.PathLike[str], port: int = 8000, *, quiet: bool = False) -> WebServer:
    """Bind 127.0.0.1:``port`` (0: any free port) and return the server; ``serve_forever`` runs it."""
    model = Path(model).resolve()
    ort_dist = check_setup(model)
    app = WebApp(model, ort_dist, _Digests())
    app.digests.sha256(model)  # hash a large model once before the first request, not during it
    handler = type("Handler", (_Handler,), {"app": app, "quiet": quiet})
    try:
        return WebServer(("127.0.0.1", port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise WebSetupError(f"port {port} on 127.0.0.1 is already in use: stop what uses it or pick "
                                "another with --port") from None
        raise WebSetupError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") from None


def serve_in_thread(model: str | os.PathLike[str], port: int = 0) -> tuple[WebServer, threading.Thread]:
    """Start a quiet server in a daemon thread (tests, benchmarks); stop it with ``server.shutdown()``."""
    server = make_server(model, port, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
