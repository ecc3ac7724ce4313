"""Speed of each embedding target relative to ONNX Runtime in Python, measured in one run on the same images.

    python -m benchmarks.runtimes --onnx exports/model.onnx [--images 16] [--repeats 3]

Two comparisons, each against ORT-Python measured in the same run, interleaved round by round:

* **per file, end to end** (decode + preprocess + model, batch 1, what an app does for one photo):
  ORT-Python (``OnnxClassifier.predict_files``), the browser page (headless Chromium, onnxruntime-web wasm,
  SIMD, threads), the C++ example (its process time for N files minus that for one file: load and
  start-up excluded);
* **model only** (preprocessed tensors, batch 1): ORT-Python fp32, OpenVINO fp32 (f32 pinned), and the
  ``.fp16.onnx`` / ``.int8.onnx`` files beside ``--onnx`` when present, in both runtimes.

Targets whose tools are missing (Chromium, node_modules, C++ headers, openvino) are skipped and listed.
Writes JSON to ``--out`` (default /tmp/skinonnx-bench/runtimes-<time>.json). Ratios are what count on a
shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "isic-bm"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.runtimes", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, required=True,
                   help="The float32 model (its .fp16/.int8 siblings are used too).")
    p.add_argument("--data", type=Path, default=REAL_DATA, help="Split ImageFolder; its test JPEGs are classified.")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="Interleaved rounds; the best round of each counts.")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def best_rate(times: list[float], n: int) -> float:
    return n / min(times)


def ort_python_files(model: Path, images: list[Path]) -> float:
    from skinonnx.deploy.runtime import OnnxClassifier

    clf = OnnxClassifier(model, "cpu")
    list(clf.predict_files(images[:1], batch_size=1))  # warm-up
    t0 = time.perf_counter()
    rows = list(clf.predict_files(images, batch_size=1))
    assert all(r.ok for r in rows)
    return time.perf_counter() - t0


def browser_files(model: Path, images: list[Path]) -> float | None:
    from skinonnx.deploy import web_server

    node = shutil.which("node")
    driver = ROOT / "examples/web/node_modules/puppeteer-core"
    if not (node and Path("/usr/bin/chromium").is_file() and driver.is_dir()):
        return None
    server, _ = web_server.serve_in_thread(model)
    try:
        with tempfile.TemporaryDirectory() as profile:
            done = subprocess.run([node, str(ROOT / "examples/web/headless.js"), server.url, *map(str, images),
                                   "--user-data-dir", profile, "--repeat", "2"],
                                  capture_output=True, text=True, timeout=900, check=True)
    finally:
        server.shutdown()
        server.server_close()
    summary = json.loads(done.stdout.splitlines()[-1])["summary"]
    # the faster of two passes over all images (the first warms up wasm): file choice to the last result shown
    return min(summary["passMs"]) / 1000


def cpp_files(binary: Path | None, model: Path, images: list[Path]) -> float | None:
    if binary is None:
        return None

    def run(files: list[Path]) -> float:
        t0 = time.perf_counter()
        subprocess.run([str(binary), str(model), *map(str, files)], capture_output=True, check=True, timeout=900)
        return time.perf_counter() - t0

    one, many = run(images[:1]), run(images + images[:1])
    return many - one  # len(images) extra files; load and start-up cancel out


def build_cpp(workdir: Path) -> Path | None:
    import onnxruntime

    candidates = [Path("/usr/include/onnxruntime"), *sorted((ROOT / "examples/cpp/third_party").glob("*/include"))]
    headers = [p for p in candidates if (p / "onnxruntime_cxx_api.h").is_file()]
    if not headers or shutil.which("g++") is None:
        return None
    binary = workdir / "skinonnx_classify"
    subprocess.run(["make", "-C", str(ROOT / "examples/cpp"), f"ORT_INCLUDE={headers[0]}",
                    f"ORT_LIB={Path(onnxruntime.__file__).parent / 'capi'}", f"BIN={binary}"],
                   capture_output=True, check=True, timeout=600)
    return binary


def model_only(images: list[Path], model: Path) -> dict[str, callable]:
    """name -> function(batch list) -> seconds, for every model-only variant available."""
    import onnxruntime as ort

    from skinonnx.deploy.runtime import session_options

    runners = {}
    for tag, path in (("fp32", model), ("fp16", model.with_name(f"{model.stem}.fp16.onnx")),
                      ("int8", model.with_name(f"{model.stem}.int8.onnx"))):
        if not path.is_file():
            continue
        session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        runners[f"ORT-Python {tag}"] = lambda xs, s=session: [s.run(["probabilities"], {"input": x}) for x in xs]
        try:
            import openvino as ov
        except ImportError:
            continue
        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        request = compiled.create_infer_request()
        runners[f"OpenVINO {tag}"] = lambda xs, r=request: [r.infer({"input": x}) for x in xs]
    return runners


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from skinonnx.deploy.runtime import OnnxClassifier

    images = sorted((args.data / "test").rglob("*.jpg"))[: args.images]
    if not images:
        sys.exit(f"no JPEGs under {args.data}/test")
    clf = OnnxClassifier(args.onnx, "cpu")
    prep = clf.preprocessing
    tensors = [prep.from_file(p)[None] for p in images]
    results: dict[str, list[float]] = {}
    skipped = []
    with tempfile.TemporaryDirectory() as tmp:
        binary = build_cpp(Path(tmp))
        runners = model_only(images, args.onnx)
        for runner in runners.values():
            runner(tensors[:2])  # warm-up
        for _ in range(args.repeats):
            results.setdefault("ORT-Python (files)", []).append(ort_python_files(args.onnx, images))
            for name, seconds in (("browser wasm (files)", browser_files(args.onnx, images)),
                                  ("C++ (files)", cpp_files(binary, args.onnx, images))):
                if seconds is None:
                    skipped.append(name)
                else:
                    results.setdefault(name, []).append(seconds)
            for name, runner in runners.items():
                t0 = time.perf_counter()
                runner(tensors)
                results.setdefault(f"{name} (model only)", []).append(time.perf_counter() - t0)
    n = len(images)
    rates = {name: best_rate(times, n) for name, times in results.items()}
    files_ref, model_ref = rates["ORT-Python (files)"], rates.get("ORT-Python fp32 (model only)")
    print(f"{n} ISIC JPEGs, {args.onnx} ({prep.image_size} px), batch 1, best of {args.repeats} interleaved rounds; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'target':<34} {'images/s':>9} {'÷ ORT-Python':>13}")
    for name, rate in rates.items():
        ref = files_ref if name.endswith("(files)") else model_ref
        print(f"{name:<34} {rate:>9.1f} {rate / ref:>13.2f}")
    for name in sorted(set(skipped)):
        print(f"{name}: skipped (its tools are not installed here)")
    out = args.out or Path("/tmp/skinonnx-bench") / f"runtimes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": str(args.onnx), "images": n, "seconds": results, "images_per_s": rates,
                               "skipped": sorted(set(skipped))}, indent=2))
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
