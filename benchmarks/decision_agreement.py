"""One decision, every consumer: does each app say what the ONNX file's ``label``/``in_distribution`` say?

    python -m benchmarks.decision_agreement [--onnx FILE | --train-data DIR] [--images DIR ...] [--isic 24]

The reference is ONNX Runtime in Python: the graph's own ``label`` and ``in_distribution`` outputs on the
image as ``predict`` preprocesses it. Every consumer then classifies the same files its own way and its
answer is compared: the label it shows (the class, or the refusal where the graph refused the image) and
its in/out-of-distribution flag. Consumers: ``predict`` (local, and ``--engine ray`` with 2 workers on a
private local Ray), ``serve`` (``/classify`` with the image bytes, v2 infer through ``tritonclient`` with the
preprocessed tensor and its raw ``label``/``in_distribution``), the web page in headless Chromium, the Node and
C++ examples, examples/python_minimal.py and the README snippet. v2 infer and the reference also get one
all-NaN float tensor (a NaN score: the graph must refuse it). A consumer whose tool is missing is listed as
"not run: <why>"; one that fails as "failed: <why>".

Images (default): 24 ISIC test JPEGs (half per class; skipped, saying so, where the data is absent) and
scikit-image's photographs (far-OOD). Model (default): the tests' tiny model (synthetic data, 32 px,
2 epochs; --train-data: on real images) with its weights exported at 128 px, so ISIC's 256-px JPEGs are
decoded at full scale and every consumer sees the same pixels (at 32 px a browser approximates libjpeg's
reduced DCT scale; docs/EMBEDDING.md).
Servers, Ray and the page bind 127.0.0.1 and are stopped before the script ends. Prints one markdown table.
Reuses the test harness (tests/serve/conftest.py, tests/deploy/test_web.py, test_embedding.py, test_cpp.py).
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
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SKINONNX_ISIC_DATA") or ROOT.parent / "shared" / "data" / "isic-bm")
NAN = "<all-NaN tensor>"
TIMEOUT = 600  # seconds, any one subprocess


class NotRun(Exception):
    """The consumer's tool is missing here."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.decision_agreement", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", type=Path, help="a skinonnx float-input model (default: train a tiny one)")
    p.add_argument("--images", type=Path, nargs="+", help="folders of .jpg/.png images (default: ISIC test + "
                                                          "scikit-image photographs)")
    p.add_argument("--isic", type=int, default=24, help="ISIC test images in the default set (default: 24)")
    p.add_argument("--train-data", type=Path, help="train the tiny model on this split image folder (e.g. the "
                                                   "ISIC data) instead of synthetic images")
    return p.parse_args(argv)


def cli(*args: object, env: dict[str, str] | None = None) -> str:
    """``python cli.py ARGS`` from this checkout; its output, or RuntimeError with its last line."""
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=TIMEOUT, env={**os.environ, **(env or {})})
    if done.returncode:
        raise RuntimeError((done.stdout + done.stderr).strip().splitlines()[-1])
    return done.stdout


def tiny_model(work: Path, data: Path | None) -> Path:
    """conftest.py's `trained` model (synthetic, or ``data``; 32 px, 2 epochs), its weights exported at 128 px."""
    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.data.synthetic import generate_dataset
    from skinonnx.training.checkpoint import load_checkpoint, save_checkpoint

    if data is None:
        data = work / "synthetic"
        generate_dataset(data, counts={"train": 12, "val": 6, "test": 6}, size=64, seed=3, progress=False)
    cli("train", "--data", data, "--weights", "none", "--epochs", 2, "--batch-size", 8, "--image-size", 32,
        "--name", "t", "--runs-dir", work / "runs", "--quiet", "--lr", "1e-3")
    state = load_checkpoint(work / "runs" / "t" / "weights" / "best.pt")
    state = {k: v for k, v in state.items() if k not in ("format", "format_version")}
    state["preprocessing"] = Preprocessing.for_size(128).to_dict()
    save_checkpoint(state, work / "best128.pt")
    cli("export", "--checkpoint", work / "best128.pt", "--output", work / "model.onnx", "--data", data,
        "--parity-images", 4)
    return work / "model.onnx"


def image_set(args: argparse.Namespace, work: Path) -> tuple[list[Path], list[Path]]:
    """(ISIC test images, far-OOD images); --images: all of them in the second list."""
    if args.images:
        return [], sorted(p for d in args.images for p in d.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg",
                                                                                               ".png"))
    from skinonnx.data.far_ood import write_far_ood_images

    isic = []
    if (REAL_DATA / "test").is_dir():
        isic = [p for c in ("benign", "malignant") for p in sorted((REAL_DATA / "test" / c).glob("*.jpg"))
                [:args.isic // 2]]
    else:
        print(f"(no ISIC images: {REAL_DATA / 'test'} is absent; far-OOD photographs only)", file=sys.stderr)
    return isic, write_far_ood_images(work / "far-ood", kinds=("photo",))


# --- the reference and each consumer: path -> (label as shown, in_distribution) -------------------

Answers = dict[str, tuple[object, bool]]


def model_input(classifier, path: str) -> np.ndarray:
    """One row of model input [1, ...], through predict's own decoding path (NaN for the NaN case)."""
    prep = classifier.preprocessing
    if path == NAN:
        return np.full((1, 3, prep.image_size, prep.image_size), np.nan, np.float32)
    return (prep.pixels_from_file(path) if classifier.takes_uint8 else prep.from_file(path))[None]


def reference(classifier, paths: list[str]) -> dict[str, tuple[int, bool]]:
    """The graph's own outputs, ONNX Runtime in this process: path -> (label index, in_distribution)."""
    out = {}
    for path in paths:
        label, inside = classifier.session.run(["label", "in_distribution"],
                                               {classifier.input_name: model_input(classifier, path)})
        out[path] = (int(label[0]), bool(inside[0]))
    return out


def predict(model: Path, images: list[Path], work: Path, *engine: str) -> Answers:
    out = work / f"predict{len(engine)}.json"
    cli("predict", "--onnx", model, *images, "-o", out, "--provider", "cpu", "--quiet", *engine,
        env={"RAY_USAGE_STATS_ENABLED": "0"})
    return {r["path"]: (r["prediction"], r["in_distribution"]) for r in json.loads(out.read_text())["predictions"]}


def predict_ray(model: Path, images: list[Path], work: Path) -> Answers:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise NotRun("ray is not installed (pip install 'skinonnx[scale]')")
    return predict(model, images, work, "--engine", "ray", "--ray-workers", "2", "--threads", "1")


def serve_both(classifier, model: Path, images: list[Path], work: Path) -> list[Answers]:
    """One `serve` process: /classify with each image's bytes; v2 infer (tritonclient) with each tensor + NaN."""
    import httpx
    import tritonclient.http as triton

    from tests.serve.conftest import start_server

    server = start_server(model, work / "serve.log")
    try:
        classify = {}
        for path in images:
            answer = httpx.post(f"{server.url}/classify", content=path.read_bytes(), timeout=60).json()
            classify[str(path)] = (answer["label"], answer["in_distribution"])
        client, v2 = triton.InferenceServerClient(server.address), {}
        for path in [*map(str, images), *([] if classifier.takes_uint8 else [NAN])]:
            x = model_input(classifier, path)
            tensor = triton.InferInput(classifier.input_name, list(x.shape), "UINT8" if x.dtype == np.uint8 else "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer(server.name, [tensor])
            v2[path] = (int(result.as_numpy("label")[0]), bool(result.as_numpy("in_distribution")[0]))
    finally:
        if server.stop():
            print(f"(serve exited non-zero; log: {server.stderr()[-500:]})", file=sys.stderr)
    return [classify, v2]


def skipped(call: Callable[[], object]):
    """Run a test harness check that pytest.skip()s where a tool is missing; its reason as NotRun."""
    import pytest

    try:
        return call()
    except pytest.skip.Exception as exc:
        raise NotRun(exc.msg) from None


def web_page(model: Path, images: list[Path], work: Path) -> Answers:
    from tests.deploy.test_web import _browser_or_skip, run_page

    rows, _ = run_page(skipped(_browser_or_skip), model, images, work / "web")
    return {p: (r["label"], r["in_distribution"]) for p, r in rows.items()}


def json_lines(command: list[str]) -> Answers:
    from tests.deploy.test_embedding import _json_lines

    return {p: (r["label"], r["in_distribution"]) for p, r in _json_lines(command).items()}


def node_example(model: Path, images: list[Path], work: Path) -> Answers:
    from tests.deploy.test_embedding import NODE_DIR, _node_or_skip

    return json_lines([skipped(_node_or_skip), str(NODE_DIR / "index.js"), str(model), *map(str, images)])


def cpp_example(model: Path, images: list[Path], work: Path) -> Answers:
    from tests.deploy.test_cpp import CPP_DIR, ORT_LIB, _headers

    headers = _headers()
    if headers is None:
        raise NotRun("no ONNX Runtime C++ headers (examples/cpp/get_headers.sh, or ORT_INCLUDE)")
    if shutil.which("g++") is None or shutil.which("make") is None:
        raise NotRun("g++ and make are needed to build examples/cpp")
    if not (Path("/usr/include/jpeglib.h").is_file() and Path("/usr/include/png.h").is_file()):
        raise NotRun("libjpeg/libpng headers missing (apt-get install libjpeg-dev libpng-dev)")
    binary = work / "cpp" / "skinonnx_classify"
    binary.parent.mkdir()
    subprocess.run(["make", "-s", "-C", str(CPP_DIR), f"ORT_INCLUDE={headers}", f"ORT_LIB={ORT_LIB}", f"BIN={binary}"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    return json_lines([str(binary), str(model), *map(str, images)])


def python_minimal(model: Path, images: list[Path], work: Path) -> Answers:
    return json_lines([sys.executable, str(ROOT / "examples" / "python_minimal.py"), str(model), *map(str, images)])


def readme_snippet(model: Path, images: list[Path], work: Path) -> Answers:
    """The README's code as printed, one process per image (as tests/deploy/test_readme_snippet.py runs it)."""
    from skinonnx.deploy.contract import OOD_REFUSAL
    from tests.deploy.test_readme_snippet import readme_snippet as snippet

    out = {}
    for image in images:
        code = snippet().replace('"exports/model.onnx"', repr(str(model))).replace('"lesion.jpg"', repr(str(image)))
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              timeout=TIMEOUT)
        shown = done.stdout.split("\t")[0]
        out[str(image)] = (shown, shown != OOD_REFUSAL)
    return out


# --- the table -------------------------------------------------------------------------------------


def agreement(name: str, got: Answers, want: dict[str, tuple[int, bool]], shown: Callable[[int, bool], object]
              ) -> str:
    """One row: how many of ``want``'s inputs the consumer answered as the graph did (``shown``: the graph's
    answer as this consumer shows it)."""
    n = len(want)
    labels = sum(p in got and got[p][0] == shown(*want[p]) for p in want)
    flags = sum(p in got and got[p][1] == want[p][1] for p in want)
    refused = sum(p in got and got[p][1] is False for p in want)
    return f"| {name} | {n} | {labels}/{n} | {flags}/{n} | {refused} |"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from skinonnx.deploy.decision import label_text
    from skinonnx.deploy.runtime import OnnxClassifier

    with tempfile.TemporaryDirectory(prefix="decision-agreement-") as tmp:
        work = Path(tmp)
        if args.onnx and args.train_data:
            raise SystemExit("Error: --train-data trains a model; --onnx brings one: give one of them")
        model = args.onnx.resolve() if args.onnx else tiny_model(work, args.train_data)
        isic, far = image_set(args, work)
        images = [p.resolve() for p in isic + far]
        classifier = OnnxClassifier(model, "cpu", threads=1)
        paths = [str(p) for p in images]
        want = reference(classifier, [*paths, *([] if classifier.takes_uint8 else [NAN])])
        on_images = {p: want[p] for p in paths}

        def as_text(label: int, inside: bool) -> str:
            return label_text(classifier.contract, label, inside)

        # (row names, what each row expects and how the consumer shows it, the run giving one Answers per row)
        consumers = [
            (["`predict`"], [(on_images, as_text)], lambda: [predict(model, images, work)]),
            (["`predict --engine ray` (2 workers)"], [(on_images, as_text)],
             lambda: [predict_ray(model, images, work)]),
            (["`serve` `/classify`", "`serve` v2 infer (`tritonclient`, + NaN tensor)"],
             [(on_images, as_text), (want, lambda label, inside: label)],  # v2 returns the raw outputs
             lambda: serve_both(classifier, model, images, work)),
            *[([name], [(on_images, as_text)], lambda run=run: [run(model, images, work)]) for name, run in (
                ("web page (headless Chromium)", web_page), ("Node example", node_example),
                ("C++ example", cpp_example), ("examples/python_minimal.py", python_minimal),
                ("README snippet", readme_snippet))],
        ]
        rows = [f"| ONNX Runtime in Python: the graph's outputs (reference) | {len(want)} | - | - | "
                f"{sum(not inside for _, inside in want.values())} |"]
        for names, expected, run in consumers:
            start = time.monotonic()
            try:
                rows += [agreement(n, got, w, shown) for n, got, (w, shown) in zip(names, run(), expected,
                                                                                   strict=True)]
            except NotRun as exc:
                rows += [f"| {n} | not run: {exc} | | | |" for n in names]
            except Exception as exc:  # one consumer failing must not hide the others
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                rows += [f"| {n} | failed: {why} | | | |" for n in names]
            print(f"  {' + '.join(names)}: {time.monotonic() - start:.0f} s", file=sys.stderr)
        made = f"the tiny model trained on {args.train_data or 'synthetic images'}, its weights at 128 px"
        print(f"\nModel: {args.onnx or made}; {len(isic)} ISIC test "
              f"images, {len(far)} far-OOD, one all-NaN tensor where a consumer takes tensors\n")
        print("| consumer | images | label agrees | in_distribution agrees | refused |\n|---|---|---|---|---|")
        print("\n".join(rows))
        shown = [as_text(*want[p]) for p in paths]
        print(f"\nThe graph refused {sum(not want[str(p)][1] for p in isic)}/{len(isic)} ISIC and "
              f"{sum(not want[str(p)][1] for p in far)}/{len(far)} far-OOD images; it assessed "
              + ", ".join(f"{shown.count(c)} as {c}" for c in classifier.contract.classes)
              + ("" if NAN not in want else f"; the all-NaN tensor: {'in' if want[NAN][1] else 'not in'} distribution")
              + ".")
    return 0


if __name__ == "__main__":
    sys.exit(main())
