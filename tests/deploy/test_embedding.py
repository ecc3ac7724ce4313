"""The embedding contract: `info`, the uint8-input variant, and the two examples against `predict`.

The examples run as separate processes on real ISIC JPEGs, with two models trained by the
suite: the 32-px session model (its 256-px JPEGs are decoded at 1/4 draft scale) and the same
weights at 128 px (a plain 256 -> 146 antialiased resize, no draft).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

from skinonnx.data.preprocessing import Preprocessing
from skinonnx.deploy.schema import KEYS
from tests.scratch import scratch_dir
from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "examples" / "node"
EXACT_TOL = 1e-6  # same pixels: only float round-off may differ
APPROX_TOL = 0.02  # another JPEG draft decoder or resizer (docs/EMBEDDING.md)
N_PER_CLASS = 8


@dataclass(frozen=True)
class Exported:
    float_model: Path
    uint8_model: Path
    checkpoint: Path


def _export(checkpoint: Path, out: Path, data: Path) -> Exported:
    run_cli("export", "--checkpoint", checkpoint, "--output", out, "--data", data, "--parity-images", "4",
            "--embed-preprocessing")
    return Exported(out, out.with_name(out.stem + ".uint8.onnx"), checkpoint)


@pytest.fixture(scope="module")
def exported(trained: TrainedModel, request: pytest.FixtureRequest) -> Exported:
    """The session model (32 px) with its uint8 variant."""
    return _export(trained.checkpoint, scratch_dir(request, "embed") / "model.onnx", trained.data)


@pytest.fixture
def real_images(real_data: Path) -> list[Path]:
    return [p for label in ("benign", "malignant") for p in sorted((real_data / "test" / label).glob("*.jpg"))
            [:N_PER_CLASS]]


def _metadata(path: Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _predict(model: Path, images: list[Path], tmp_path: Path) -> dict[str, dict]:
    out = tmp_path / f"{model.stem}.predict.json"
    run_cli("predict", "--onnx", model, *images, "--output", out, "--provider", "cpu", "--quiet")
    return {row["path"]: row for row in json.loads(out.read_text())["predictions"]}


def _json_lines(command: list[str]) -> dict[str, dict]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=WAIT_S, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert all("error" not in r for r in rows), rows
    return {r["path"]: r for r in rows}


def expected_label(ref: dict) -> str:
    """predict's label: the class, or the refusal where predict refused the image (docs/SAFETY.md). Every example
    reads the graph's own ``label`` and ``in_distribution`` outputs, so they say what predict says."""
    return ref["prediction"]


def _compare(example: dict[str, dict], reference: dict[str, dict], tol: float, name: str) -> float:
    """Max |Δp| over all images; labels must agree except within ``tol`` of the threshold."""
    assert set(example) == set(reference)
    diffs = []
    for path, ref in reference.items():
        got = example[path]
        diffs.append(max(abs(got["probabilities"][c] - ref[f"p_{c}"]) for c in got["probabilities"]))
        if abs(ref["p_malignant"] - ref["threshold"]) > tol:
            assert got["label"] == expected_label(ref), (path, got, ref)
    worst = max(diffs)
    print(f"\n{name}: max |Δp| vs predict = {worst:.2e} over {len(diffs)} real images (tolerance {tol:g})")
    assert worst <= tol
    return worst


# --- metadata contract and `info` --------------------------------------------------------------


def test_every_written_key_is_in_the_schema_and_documented(exported: Exported) -> None:
    docs = (ROOT / "docs" / "EMBEDDING.md").read_text()
    for model in (exported.float_model, exported.uint8_model):
        written = set(_metadata(model))
        assert written <= set(KEYS), f"undocumented keys: {written - set(KEYS)}"
        assert {k for k, spec in KEYS.items() if spec.required} <= written
    for key in KEYS:
        assert f"| `{key}` |" in docs, f"docs/EMBEDDING.md lacks a table row for {key}"


def test_info_prints_the_contract_and_validates(exported: Exported) -> None:
    for model in (exported.float_model, exported.uint8_model):
        text = run_cli("info", model).output
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        assert sha in text and "opset ai.onnx 17" in text and "schema    skinonnx_schema_version 1: valid" in text
        meta = _metadata(model)
        assert all(f"  {key} " in text for key in meta)
        doc = json.loads(run_cli("info", model, "--json").output)
        assert doc["metadata"] == meta  # our protobuf reader agrees with the onnx package
        assert doc["sha256"] == sha and doc["size_bytes"] == model.stat().st_size
        assert doc["schema"] == {"key": "skinonnx_schema_version", "version": "1", "ours": True, "valid": True,
                                 "problems": []}
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        assert [(t["name"], t["shape"]) for t in doc["inputs"]] == [(i.name, i.shape) for i in session.get_inputs()]
    float_doc = json.loads(run_cli("info", exported.float_model, "--json").output)
    uint8_doc = json.loads(run_cli("info", exported.uint8_model, "--json").output)
    assert float_doc["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 3, 32, 32]}]
    assert uint8_doc["inputs"] == [{"name": "image", "dtype": "uint8", "shape": ["batch", "height", "width", 3]}]
    assert uint8_doc["outputs"] == float_doc["outputs"]


def test_info_imports_neither_torch_nor_onnx(exported: Exported) -> None:
    code = ("import sys\nfrom skinonnx.cli import main\ntry:\n    main(['info', sys.argv[1]])\n"
            "except SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
            "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code, str(exported.uint8_model)], cwd=ROOT, capture_output=True,
                          text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _edited(source: Path, target: Path, *, drop: tuple[str, ...] = (), set_: dict[str, str] | None = None) -> Path:
    model = onnx.load(str(source))
    kept = [p for p in model.metadata_props if p.key not in drop]
    del model.metadata_props[:]
    for p in kept:
        model.metadata_props.add(key=p.key, value=(set_ or {}).get(p.key, p.value))
    onnx.save(model, str(target))
    return target


def test_info_refuses_foreign_broken_and_inconsistent_files(exported: Exported, tmp_path: Path) -> None:
    foreign = _edited(exported.float_model, tmp_path / "foreign.onnx", drop=tuple(_metadata(exported.float_model)))
    out = run_cli("info", foreign, expect=1).output
    assert "not a skinonnx model" in out and "Traceback" not in out
    assert "input: float32" in out  # what it is, before the error

    missing = _edited(exported.float_model, tmp_path / "missing.onnx", drop=("temperature", "mean"))
    assert "missing required keys: temperature, mean" in run_cli("info", missing, expect=1).output

    bad = _edited(exported.float_model, tmp_path / "bad.onnx",
                  set_={"decision_threshold": "1.5", "classes": '["benign"]'})
    out = run_cli("info", bad, expect=1).output
    assert "'decision_threshold': expected a number in [0, 1]" in out and "'classes': expected at least 2 items" in out

    lying = _edited(exported.uint8_model, tmp_path / "lying.onnx", set_={"input_name": "pixels"})
    assert "graph input is 'image', metadata 'input_name' says 'pixels'" in run_cli("info", lying, expect=1).output

    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(exported.float_model.read_bytes()[:5000])
    text = tmp_path / "text.onnx"
    text.write_text("not a model at all\n")
    for path in (truncated, text):
        out = run_cli("info", path, expect=1).output
        assert "not an ONNX model" in out or "not a valid ONNX model" in out
        assert "Traceback" not in out


# --- the uint8-input variant ---------------------------------------------------------------------


def test_uint8_variant_matches_the_float_model_on_real_images(model128: Exported, real_images: list[Path]) -> None:
    prep = Preprocessing.for_size(128)
    f = ort.InferenceSession(str(model128.float_model), providers=["CPUExecutionProvider"])
    u = ort.InferenceSession(str(model128.uint8_model), providers=["CPUExecutionProvider"])
    expected = f.run(None, {"input": np.stack([prep.from_file(p) for p in real_images])})
    resized = [np.asarray(prep.load_resized(p)) for p in real_images]
    assert all(r.shape == (146, 146, 3) for r in resized)  # uncropped: the graph crops
    uncropped = [np.concatenate(k) for k in zip(*[u.run(None, {"image": r[None]}) for r in resized], strict=True)]
    cropped = u.run(None, {"image": np.stack([prep.pixels_from_file(p) for p in real_images])})
    for got in (uncropped, cropped):
        for name, e, g in zip([o.name for o in f.get_outputs()], expected, got, strict=True):  # + cam
            diff = float(np.max(np.abs(e.astype(np.float64) - g.astype(np.float64))))  # label, in_distribution too
            print(f"\nuint8 vs float {name}: max |Δ| = {diff:.2e}")
            assert diff <= 1e-5


def test_uint8_graph_crops_like_python_and_refuses_small_inputs(exported: Exported) -> None:
    prep = Preprocessing.for_size(32)  # S = 32, R = 37
    f = ort.InferenceSession(str(exported.float_model), providers=["CPUExecutionProvider"])
    u = ort.InferenceSession(str(exported.uint8_model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    # odd and even excess on each side: the half-to-even rounding of the crop offset shows
    for w, h in [(37, 37), (37, 60), (39, 38), (41, 37), (32, 32)]:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        crop = prep.center_crop(Image.fromarray(pixels))
        want = f.run(["logits"], {"input": prep.normalize(crop)[None]})[0]
        got = u.run(["logits"], {"image": pixels[None]})[0]
        np.testing.assert_array_equal(got, want)
    for w, h in [(31, 40), (40, 20)]:
        with pytest.raises(Exception, match="reshape"):
            u.run(None, {"image": np.zeros((1, h, w, 3), np.uint8)})


def test_predict_and_test_run_the_uint8_variant(exported: Exported, trained: TrainedModel, tmp_path: Path) -> None:
    images = sorted((trained.data / "test").rglob("*.png"))
    as_float = _predict(exported.float_model, images, tmp_path)
    as_uint8 = _predict(exported.uint8_model, images, tmp_path)
    for path, row in as_float.items():
        assert as_uint8[path]["prediction"] == row["prediction"]
        assert as_uint8[path]["p_malignant"] == pytest.approx(row["p_malignant"], abs=1e-6)
    out = run_cli("test", "--onnx", exported.uint8_model, "--data", trained.data, "--output", tmp_path / "report",
                  "--provider", "cpu", "--quiet").output
    assert "roc_auc" in out


def test_failing_uint8_parity_writes_neither_file(trained: TrainedModel, tmp_path: Path, monkeypatch) -> None:
    import dataclasses

    import skinonnx.export.onnx_export as export
    import skinonnx.export.uint8_input as embed

    def wrong_mean(model, contract):  # a plausible bug: normalising with other statistics
        prep = dataclasses.replace(contract.preprocessing, mean=(0.5, 0.5, 0.5))
        return embed.embed_preprocessing(model, dataclasses.replace(contract, preprocessing=prep))

    monkeypatch.setattr(export, "embed_preprocessing_graph", wrong_mean)
    out = tmp_path / "m.onnx"
    result = run_cli("export", "--checkpoint", trained.checkpoint, "--output", out, "--data", trained.data,
                     "--parity-images", "4", "--embed-preprocessing", expect=1)
    assert "uint8 parity FAILED" in result.output and "Traceback" not in result.output
    assert not list(tmp_path.iterdir())


# --- the examples against `predict` on real images ----------------------------------------------


def test_python_example_matches_predict(exported: Exported, real_images: list[Path], tmp_path: Path) -> None:
    script = ROOT / "examples" / "python_minimal.py"
    assert "skinonnx" not in "".join(line for line in script.read_text().splitlines() if "import" in line)
    for model in (exported.float_model, exported.uint8_model):  # 32 px: the JPEG draft path
        reference = _predict(model, real_images, tmp_path)
        got = _json_lines([sys.executable, str(script), str(model), *map(str, real_images)])
        _compare(got, reference, EXACT_TOL, f"python_minimal.py on {model.name}")
        assert all(got[p]["label"] == expected_label(r) for p, r in reference.items())


def _node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the Node.js example needs Node >= 20)")
    if not (NODE_DIR / "node_modules" / "onnxruntime-node").is_dir() or not (NODE_DIR / "node_modules" /
                                                                              "sharp").is_dir():
        pytest.skip("examples/node/node_modules is missing: run `npm ci --ignore-scripts --prefix examples/node`")
    return node


def test_node_pillow_resize_port_is_bit_exact(tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the Node.js example needs Node >= 20)")
    rng = np.random.default_rng(1)
    cases = [(256, 256, 146, 146), (256, 256, 37, 37), (300, 200, 219, 146), (37, 50, 256, 346), (1000, 750, 341, 256),
             (17, 9, 5, 3), (100, 100, 100, 57), (64, 64, 73, 73)]  # shrink, enlarge, one axis only
    for i, (w, h, ow, oh) in enumerate(cases):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        if i % 2:  # smooth content too, not only noise
            pixels = np.asarray(Image.fromarray(pixels).resize((w // 4 + 1, h // 4 + 1)).resize((w, h), Image.BICUBIC))
        pixels.tofile(tmp_path / f"in{i}.raw")
        want = Image.fromarray(pixels).resize((ow, oh), Image.Resampling.BILINEAR)
        np.asarray(want).tofile(tmp_path / f"want{i}.raw")
    script = ("const {resizeBilinear} = require(process.argv[1]); const fs = require('fs');"
              "const [dir, cases] = [process.argv[2], JSON.parse(process.argv[3])];"
              "cases.forEach(([w, h, ow, oh], i) => fs.writeFileSync(`${dir}/got${i}.raw`,"
              " resizeBilinear(fs.readFileSync(`${dir}/in${i}.raw`), w, h, ow, oh)));")
    subprocess.run([node, "-e", script, str(NODE_DIR / "pillow_resize.js"), str(tmp_path), json.dumps(cases)],
                   check=True, timeout=WAIT_S)
    for i in range(len(cases)):
        assert (tmp_path / f"got{i}.raw").read_bytes() == (tmp_path / f"want{i}.raw").read_bytes(), cases[i]


def _node(node: str, model: Path, images: list[Path], *extra: str) -> dict[str, dict]:
    return _json_lines([node, str(NODE_DIR / "index.js"), str(model), *map(str, images), *extra])


def test_node_example_reproduces_predict_exactly(model128: Exported, real_images: list[Path],
                                                 tmp_path: Path) -> None:
    node = _node_or_skip()
    for model in (model128.float_model, model128.uint8_model):
        reference = _predict(model, real_images, tmp_path)
        got = _node(node, model, real_images)
        _compare(got, reference, EXACT_TOL, f"node --resize pillow on {model.name}")
        assert all(got[p]["label"] == expected_label(r) for p, r in reference.items())


def test_node_example_with_approximate_decoding_or_resizing(exported: Exported, model128: Exported,
                                                            real_images: list[Path], tmp_path: Path) -> None:
    node = _node_or_skip()
    cases = [(exported.uint8_model, "pillow", "JPEG draft approximated by block means"),
             (model128.float_model, "sharp", "sharp's linear resize")]
    for model, mode, what in cases:
        reference = _predict(model, real_images, tmp_path)
        _compare(_node(node, model, real_images, "--resize", mode), reference, APPROX_TOL,
                 f"node --resize {mode} on {model.name} ({what})")


def test_node_example_refuses_a_foreign_model(exported: Exported, real_images: list[Path], tmp_path: Path) -> None:
    node = _node_or_skip()
    foreign = _edited(exported.float_model, tmp_path / "foreign.onnx", drop=tuple(_metadata(exported.float_model)))
    done = subprocess.run([node, str(NODE_DIR / "index.js"), str(foreign), str(real_images[0])],
                          capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 1 and "not a skinonnx model" in done.stderr
