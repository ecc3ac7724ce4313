"""`web`: serve the browser example (examples/web/) and one model on 127.0.0.1.

A fixed set of routes, nothing else: the page and its script, the shared JavaScript of the Node
example (``/lib/``), onnxruntime-web's own files from ``examples/web/node_modules`` (``/ort/``) and the
model (``/model.onnx``). Every response carries the cross-origin isolation headers that WebAssembly
threads need (COOP ``same-origin``, COEP ``require-corp``) and a content security policy that lets the
page talk to this origin only. Standard library only (no torch, no onnxruntime).
"""

from __future__ import annotations

import errno
import http.server
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelFileError, SkinOnnxError
from .info import inspect_model, schema_error

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "examples" / "web"
LIB_DIR = ROOT / "examples" / "node"
ORT_DIST = WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"
PAGE_FILES = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/style.css": "style.css"}
LIB_FILES = ("onnx_metadata.js", "pillow_resize.js", "contract.js")
ORT_FILE = re.compile(r"/ort/(ort[\w.-]*\.(?:js|mjs|wasm))")  # the wasm build's loader, worker module, binary
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".wasm": "application/wasm",
         ".onnx": "application/octet-stream"}
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self' blob:; "
                               "img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class WebSetupError(SkinOnnxError):
    """The web example cannot be served (files missing, port taken)."""


@dataclass(frozen=True)
class WebApp:
    model: Path

    def resolve(self, url_path: str) -> Path | None:
        """The file for a request path, or None (404). Only the routes above; no directory listing."""
        path = url_path.split("?", 1)[0].split("#", 1)[0]
        if path in PAGE_FILES:
            return WEB_DIR / PAGE_FILES[path]
        if path == "/model.onnx":
            return self.model
        if path.startswith("/lib/") and path[5:] in LIB_FILES:
            return LIB_DIR / path[5:]
        match = ORT_FILE.fullmatch(path)
        if match:
            return ORT_DIST / match.group(1)
        return None


def check_setup(model: Path) -> None:
    """Fail before binding a port when the page, onnxruntime-web or the model is missing."""
    if not model.is_file():
        raise ModelFileError(f"ONNX model not found: {model}")
    problem = schema_error(inspect_model(model))  # the page reads the same metadata: refuse a foreign file here
    if problem is not None:
        raise problem
    missing = [p for p in (WEB_DIR / "index.html", *(LIB_DIR / f for f in LIB_FILES)) if not p.is_file()]
    if missing:
        raise WebSetupError(f"the web example is not in this installation ({missing[0]} is missing): run `web` "
                            "from a source checkout of skinonnx")
    if not (ORT_DIST / "ort.wasm.min.js").is_file():
        raise WebSetupError(f"onnxruntime-web is not installed in {WEB_DIR}: run "
                            "`npm ci --ignore-scripts --prefix examples/web` once (needs Node >= 20 and npm)")


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
        target = self.app.resolve(self.path)
        if target is None or not target.is_file():
            self.send_error(404, "not found")
            return
        data = target.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", TYPES.get(target.suffix, "application/octet-stream"))
        self.send_header("Content-Length", str(len(data)))
        for key, value in HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        self.error_message_format = "%(code)d %(message)s\n"
        self.error_content_type = "text/plain; charset=utf-8"
        super().send_error(code, message, explain)

    def end_headers(self) -> None:
        if self._headers_buffer and b"Cross-Origin-Opener-Policy" not in b"".join(self._headers_buffer):
            for key, value in HEADERS.items():  # error pages too
                self.send_header(key, value)
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
    check_setup(model)
    handler = type("Handler", (_Handler,), {"app": WebApp(model), "quiet": quiet})
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
