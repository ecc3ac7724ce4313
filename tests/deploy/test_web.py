"""The browser example and the `web` command: a real server on 127.0.0.1, a real headless Chromium.

The browser test opens the page served by :mod:`skinonnx.deploy.web_server`, chooses real ISIC images in
its file input (puppeteer-core drives the system's Chromium; no browser is downloaded), and compares what
the page shows with `python cli.py predict` on the same files. It skips, saying why, where Chromium, Node
or ``examples/web/node_modules`` is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from skinonnx.deploy import web_server

from ..conftest import TrainedModel, run_cli
from .test_embedding import APPROX_TOL, EXACT_TOL, Exported, _compare, _predict

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "examples" / "web"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TOL = 1e-5  # same pixels, another runtime build (wasm, SIMD, 2 threads): float round-off only


def _needs_ort_web() -> None:
    if not (web_server.ORT_DIST / "ort.wasm.min.js").is_file():
        pytest.skip("examples/web/node_modules is missing: run `npm ci --ignore-scripts --prefix examples/web`")


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy: 127.0.0.1 only
    try:
        with opener.open(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_web_server_serves_the_page_model_and_runtime_with_isolation_headers(trained: TrainedModel) -> None:
    _needs_ort_web()
    server, _ = web_server.serve_in_thread(trained.onnx)
    try:
        assert server.server_address[0] == "127.0.0.1"
        status, headers, body = _get(server.url)
        assert status == 200 and b'id="image-file"' in body
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert "connect-src 'self'" in headers["Content-Security-Policy"]
        status, _, body = _get(server.url + "model.onnx")
        assert status == 200 and body == trained.onnx.read_bytes()
        status, headers, body = _get(server.url + "ort/ort-wasm-simd-threaded.wasm")
        assert status == 200 and headers["Content-Type"] == "application/wasm" and body[:4] == b"\0asm"
        status, _, body = _get(server.url + "lib/pillow_resize.js")
        assert status == 200 and body == (ROOT / "examples" / "node" / "pillow_resize.js").read_bytes()
        for path in ("../setup.cfg", "lib/index.js", "ort/../package.json", "node_modules/", "tests/", "%2e%2e/x"):
            status, headers, _ = _get(server.url + path)
            assert status == 404, path
            assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
    finally:
        server.shutdown()
        server.server_close()


def test_web_command_errors_are_one_line(trained: TrainedModel, tmp_path: Path) -> None:
    _needs_ort_web()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli("web", "--onnx", trained.onnx, "--port", port, expect=1).output
        assert f"port {port} on 127.0.0.1 is already in use" in out and "Traceback" not in out
    foreign = tmp_path / "notes.onnx"
    foreign.write_text("not a model\n")
    out = run_cli("web", "--onnx", foreign, "--port", 0, expect=1).output
    assert "not an ONNX model" in out or "not a valid ONNX model" in out
    assert "not found" in run_cli("web", "--onnx", tmp_path / "missing.onnx", expect=1).output


# --- the page in headless Chromium ---------------------------------------------------------------


def _browser_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the browser test drives Chromium from Node >= 20)")
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")
    if not (WEB_DIR / "node_modules" / "puppeteer-core").is_dir():
        pytest.skip("examples/web/node_modules is missing: run `npm ci --ignore-scripts --prefix examples/web`")
    _needs_ort_web()
    return node


def run_page(node: str, model: Path, images: list[Path], workdir: Path, *extra: str) -> tuple[dict, dict]:
    """Serve ``model``, classify ``images`` in headless Chromium; return (rows by path, summary)."""
    server, _ = web_server.serve_in_thread(model)
    try:
        done = subprocess.run([node, str(WEB_DIR / "headless.js"), server.url, *map(str, images),
                               "--chromium", str(CHROMIUM), "--user-data-dir", str(workdir / "chromium-profile"),
                               *extra], capture_output=True, text=True, timeout=300, cwd=ROOT)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    summary = lines.pop()["summary"]
    assert all("error" not in row for row in lines), lines
    return {row["path"]: row for row in lines}, summary


@pytest.mark.realdata
def test_browser_page_reproduces_predict_on_isic_images(model128: Exported, trained: TrainedModel,
                                                         isic_images: list[Path], tmp_path: Path) -> None:
    node = _browser_or_skip()
    cases = [(model128.float_model, BROWSER_TOL, "128 px float model, full-scale JPEG decoding + Pillow resize"),
             (model128.uint8_model, BROWSER_TOL, "128 px uint8 model (the graph crops and normalises)"),
             (trained.onnx, APPROX_TOL, "32 px model: JPEG draft 1/4 approximated by block means")]
    for i, (model, tol, what) in enumerate(cases):
        reference = _predict(model, isic_images, tmp_path)
        shot = tmp_path / f"page-{i}.png"
        rows, summary = run_page(node, model, isic_images, tmp_path / str(i), "--screenshot", str(shot))
        assert summary["requestsOutsideOrigin"] == [], summary  # the image and the model stay on this machine
        assert summary["consoleErrors"] == [], summary
        assert summary["crossOriginIsolated"] is True and summary["threads"] >= 1
        _compare(rows, reference, tol, f"browser (Chromium {summary['browser']}, wasm) on {model.name}: {what}")
        if tol <= EXACT_TOL * 10:
            assert all(rows[p]["label"] == r["prediction"] for p, r in reference.items())
        assert shot.stat().st_size > 10_000  # a rendered page; look at it: pytest --basetemp=DIR keeps it
        print(f"screenshot: {shot}")
