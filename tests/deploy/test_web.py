"""The browser page and the `web` command: a real server on 127.0.0.1, a real headless Chromium.

The page is package data (skinonnx/deploy/web/); examples/web/ holds its test harness (headless.js) and the
npm packages (onnxruntime-web, puppeteer-core). The server tests check routes, caching headers (the model
by content hash, immutable) and that an installed copy of skinonnx, run outside this checkout, serves the
page. The browser test opens the page, chooses real ISIC images in its file input (puppeteer-core drives the
system's Chromium; no browser is downloaded), and compares what the page shows with `python cli.py predict`
on the same files. It skips, saying why, where Chromium, Node or ``examples/web/node_modules`` is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from skinonnx.deploy import web_server
from skinonnx.hashing import file_sha256
from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli
from .test_embedding import APPROX_TOL, EXACT_TOL, Exported, _compare, _predict, expected_label

ROOT = Path(__file__).resolve().parents[2]
WEB_DIR = ROOT / "examples" / "web"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_TOL = 1e-5  # same pixels, another runtime build (wasm, SIMD, 2 threads): float round-off only


def _needs_ort_web() -> None:
    if not (web_server.CHECKOUT_ORT / "ort.wasm.min.js").is_file():
        pytest.skip("examples/web/node_modules is missing: run `npm ci --ignore-scripts --prefix examples/web`")


def _get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy: 127.0.0.1 only
    request = urllib.request.Request(url, headers={k.replace("_", "-"): v for k, v in headers.items()})
    try:
        with opener.open(request, timeout=WAIT_S) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _stub_ort(folder: Path) -> Path:
    """A folder whose ./node_modules holds a stand-in onnxruntime-web (the header tests fetch no wasm)."""
    dist = folder / "node_modules" / "onnxruntime-web" / "dist"
    dist.mkdir(parents=True)
    (dist / "ort.wasm.min.js").write_text("/* stand-in for onnxruntime-web in the server tests */\n")
    return folder


def _with_metadata(source: Path, target: Path, **extra: str) -> Path:
    """A copy of ``source`` with metadata keys added or replaced (onnx, as export writes them)."""
    import onnx

    model = onnx.load(str(source))
    meta = {p.key: p.value for p in model.metadata_props} | extra
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(target))
    return target


def _quantization(source_sha: str, ok: bool) -> str:
    return json.dumps({"format": "QDQ", "source_model_sha256": source_sha,
                       "gate": {"ok": ok, "split": "val", "n_images": 90, "label_agreement": 0.989,
                                "auc_change": 0.0014}})


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


def test_model_is_cached_by_content_hash_and_files_revalidate(trained: TrainedModel, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(_stub_ort(tmp_path / "cwd"))
    model = tmp_path / "exports" / "model.onnx"
    model.parent.mkdir()
    shutil.copyfile(trained.onnx, model)
    server, _ = web_server.serve_in_thread(model)
    try:
        status, headers, body = _get(server.url + "model.json")
        info = json.loads(body)
        sha = file_sha256(model)
        assert status == 200 and headers["Cache-Control"] == "no-store"
        assert info["url"] == f"models/{sha}.onnx" and info["bytes"] == model.stat().st_size and not info["int8"]
        assert info["download_seconds"]["10 Mbit/s"] == pytest.approx(model.stat().st_size * 8 / 10e6, abs=0.05)
        status, headers, body = _get(server.url + info["url"])
        assert status == 200 and body == model.read_bytes()
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert headers["ETag"] == f'"{sha}"' and headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        # the plain name and the page's own files: kept by the browser, but asked again (304 when unchanged)
        for path, etag in (("model.onnx", f'"{sha}"'), ("app.js", None), ("lib/contract.js", None)):
            status, headers, body = _get(server.url + path)
            assert status == 200 and headers["Cache-Control"] == "no-cache", path
            assert etag in (None, headers["ETag"])
            status, again, body = _get(server.url + path, If_None_Match=headers["ETag"])
            assert status == 304 and body == b"" and again["Cache-Control"] == "no-cache", path
            assert _get(server.url + path, If_None_Match='"stale"')[0] == 200
        status, headers, _ = _get(server.url + f"models/{'0' * 64}.onnx")
        assert status == 404 and headers["Cache-Control"] == "no-store"
        # a new file under the same name gets a new URL; the old hash is no longer served
        _with_metadata(trained.onnx, model, note="re-exported")
        info2 = json.loads(_get(server.url + "model.json")[2])
        assert info2["sha256"] == file_sha256(model) != sha
        assert _get(server.url + info["url"])[0] == 404
        assert _get(server.url + info2["url"])[2] == model.read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_int8_variant_is_recommended_only_when_made_from_this_model_and_its_gate_passed(
        trained: TrainedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The recommendation reads the INT8 file's `quantization` metadata only; these copies of the fp32 file
    # carry that metadata (a real INT8 export and its gate are tested in tests/export/test_quantize.py).
    monkeypatch.chdir(_stub_ort(tmp_path / "cwd"))
    model = tmp_path / "model.onnx"
    shutil.copyfile(trained.onnx, model)
    sha = file_sha256(model)
    _with_metadata(trained.onnx, tmp_path / "failed.int8.onnx", quantization=_quantization(sha, ok=False))
    _with_metadata(trained.onnx, tmp_path / "older.int8.onnx", quantization=_quantization("f" * 64, ok=True))
    server, _ = web_server.serve_in_thread(model)
    try:
        assert json.loads(_get(server.url + "model.json")[2])["int8_variant"] is None
        assert _get(server.url + f"models/{file_sha256(tmp_path / 'failed.int8.onnx')}.onnx")[0] == 404
        int8 = _with_metadata(trained.onnx, tmp_path / "small.onnx", quantization=_quantization(sha, ok=True))
        variant = json.loads(_get(server.url + "model.json")[2])["int8_variant"]
        assert variant["name"] == "small.onnx" and variant["bytes"] == int8.stat().st_size
        assert variant["label_agreement"] == 0.989 and variant["gate_images"] == 90
        status, headers, body = _get(server.url + f"models/{variant['sha256']}.onnx")
        assert status == 200 and body == int8.read_bytes() and "immutable" in headers["Cache-Control"]
    finally:
        server.shutdown()
        server.server_close()
    server, _ = web_server.serve_in_thread(int8)  # serving the INT8 file itself: nothing smaller to recommend
    try:
        info = json.loads(_get(server.url + "model.json")[2])
        assert info["int8"] is True and info["int8_variant"] is None
    finally:
        server.shutdown()
        server.server_close()


def test_page_start_up_shows_size_download_time_and_int8_advice(trained: TrainedModel, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """app.js's start-up in Node (examples/web/page_startup.js: stand-in DOM, stub ORT session, real fetch)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the page's start-up runs in Node >= 20)")
    monkeypatch.chdir(_stub_ort(tmp_path / "cwd"))
    model = tmp_path / "model.onnx"
    shutil.copyfile(trained.onnx, model)
    int8 = _with_metadata(trained.onnx, tmp_path / "model.int8.onnx",
                          quantization=_quantization(file_sha256(model), ok=True))
    server, _ = web_server.serve_in_thread(model)
    try:
        done = subprocess.run([node, str(WEB_DIR / "page_startup.js"), server.url, str(web_server.PAGE_DIR)],
                              capture_output=True, text=True, timeout=WAIT_S)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert page["ready"] == "model", page
    assert page["requested"] == ["model.json", f"models/{file_sha256(model)}.onnx"]  # never the plain name
    assert page["modelBytes"] == model.stat().st_size
    size_mb = f"{model.stat().st_size / 1e6:.1f} MB"
    assert size_mb in page["text"]["model-size"] and "at 10 Mbit/s" in page["text"]["model-size"]
    assert not page["adviceHidden"] and "model.int8.onnx" in page["text"]["model-advice"]
    assert f"{int8.stat().st_size / 1e6:.1f} MB" in page["text"]["model-advice"]
    assert "98.9 % of 90 val images" in page["text"]["model-advice"]


def test_ort_web_version_matches_the_example_package() -> None:
    package = json.loads((WEB_DIR / "package.json").read_text())
    assert package["dependencies"]["onnxruntime-web"] == web_server.ORT_WEB_VERSION


def _installed_copy(tmp_path: Path) -> Path:
    """Build a wheel of this checkout (no network) and unpack it: what `pip install skinonnx` puts on disk."""
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "skinonnx", src / "skinonnx", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "examples" / "node", src / "examples" / "node", ignore=shutil.ignore_patterns(
        "node_modules"))  # the targets of skinonnx/deploy/web/lib/*.js
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel")], cwd=src, check=True, capture_output=True, timeout=WAIT_S)
    site = tmp_path / "site"
    with zipfile.ZipFile(next((tmp_path / "wheel").glob("skinonnx-*.whl"))) as wheel:
        wheel.extractall(site)
    return site


def test_installed_skinonnx_serves_the_page_outside_a_checkout(trained: TrainedModel, tmp_path: Path) -> None:
    site = _installed_copy(tmp_path)
    page_dir = site / "skinonnx" / "deploy" / "web"
    assert not any(p.is_symlink() for p in page_dir.rglob("*"))  # the wheel holds copies, not links
    elsewhere = _stub_ort(tmp_path / "elsewhere")
    env = {**os.environ, "PYTHONPATH": str(site)}
    console_script = "import sys; from skinonnx.cli import main; sys.argv[0] = 'skinonnx'; main()"  # as pip writes it
    proc = subprocess.Popen([sys.executable, "-c", console_script, "web", "--onnx", str(trained.onnx), "--port", "0"],
                            cwd=elsewhere, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line
        for path, expected in (("", page_dir / "index.html"), ("app.js", page_dir / "app.js"),
                               ("lib/contract.js", ROOT / "examples" / "node" / "contract.js"),
                               ("ort/ort.wasm.min.js", elsewhere / "node_modules" / "onnxruntime-web" / "dist"
                                / "ort.wasm.min.js")):
            status, _, body = _get(url.group(0) + path)
            assert status == 200 and body == expected.read_bytes(), path
    finally:
        proc.terminate()
        proc.wait(timeout=WAIT_S)
    probe = subprocess.run([sys.executable, "-c", "import skinonnx.deploy.web_server as w; print(w.PAGE_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert Path(probe.stdout.strip()) == page_dir.resolve()  # served from the installed package, not this checkout


def test_web_without_onnxruntime_web_names_the_npm_command(trained: TrainedModel, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_server, "CHECKOUT_ORT", tmp_path / "absent")
    monkeypatch.chdir(tmp_path)
    out = run_cli("web", "--onnx", trained.onnx, "--port", 0, expect=1).output
    assert f"npm install onnxruntime-web@{web_server.ORT_WEB_VERSION}" in out and "Traceback" not in out


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
                               *extra], capture_output=True, text=True, timeout=WAIT_S, cwd=ROOT)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    summary = lines.pop()["summary"]
    assert all("error" not in row for row in lines), lines
    return {row["path"]: row for row in lines}, summary


@pytest.mark.slow
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
            assert all(rows[p]["label"] == expected_label(r) for p, r in reference.items())
        assert shot.stat().st_size > 10_000  # a rendered page; look at it: pytest --basetemp=DIR keeps it
        print(f"screenshot: {shot}")
