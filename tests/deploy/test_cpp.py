"""The C++ example: built here against the ONNX Runtime library of the installed Python wheel, run on real
images, compared with `python cli.py predict`.

Headers: ``$ORT_INCLUDE``, else Debian 13's ``/usr/include/onnxruntime`` (libonnxruntime-dev), else
``examples/cpp/third_party/`` (``examples/cpp/get_headers.sh`` puts the pinned Debian 13 package's headers
there). The test skips, saying which, when headers, a compiler, libjpeg or libpng are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import onnxruntime
import pytest

from tests.scratch import scratch_dir
from tests.waits import WAIT_S

from .test_embedding import EXACT_TOL, Exported, _compare, _json_lines, _predict, expected_label

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
ROOT = Path(__file__).resolve().parents[2]
CPP_DIR = ROOT / "examples" / "cpp"
ORT_LIB = Path(onnxruntime.__file__).parent / "capi"  # the wheel ships libonnxruntime.so.1.xx.y here


def _headers() -> Path | None:
    candidates = [Path(os.environ["ORT_INCLUDE"])] if os.environ.get("ORT_INCLUDE") else []
    candidates += [Path("/usr/include/onnxruntime"), *sorted((CPP_DIR / "third_party").glob("onnxruntime-*/include"))]
    return next((c for c in candidates if (c / "onnxruntime_cxx_api.h").is_file()), None)


@pytest.fixture(scope="module")
def classify_binary(request: pytest.FixtureRequest) -> Path:
    headers = _headers()
    if headers is None:
        pytest.skip("ONNX Runtime C++ headers not found: install libonnxruntime-dev (Debian 13 / Ubuntu) or run "
                    "examples/cpp/get_headers.sh, or set ORT_INCLUDE")
    if shutil.which("g++") is None or shutil.which("make") is None:
        pytest.skip("g++ and make are needed to build examples/cpp")
    if not (Path("/usr/include/jpeglib.h").is_file() and Path("/usr/include/png.h").is_file()):
        pytest.skip("libjpeg and libpng headers are missing: apt-get install libjpeg-dev libpng-dev")
    binary = scratch_dir(request, "cpp") / "skinonnx_classify"
    done = subprocess.run(["make", "-C", str(CPP_DIR), f"ORT_INCLUDE={headers}", f"ORT_LIB={ORT_LIB}",
                           f"BIN={binary}"], capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    return binary


def test_cpp_example_reproduces_predict(classify_binary: Path, model128: Exported,
                                        isic_images: list[Path], tmp_path: Path) -> None:
    for model in (model128.float_model, model128.uint8_model):
        reference = _predict(model, isic_images, tmp_path)
        got = _json_lines([str(classify_binary), str(model), *map(str, isic_images)])
        _compare(got, reference, EXACT_TOL, f"C++ (ONNX Runtime {onnxruntime.__version__}, libjpeg) on {model.name}")
        assert all(got[p]["label"] == expected_label(r) for p, r in reference.items())


def test_cpp_example_jpeg_draft_scaling_matches_pillow(classify_binary: Path, trained, isic_images: list[Path],
                                                       tmp_path: Path) -> None:
    """32 px model: ISIC's 256-px JPEGs are decoded at 1/4 scale by libjpeg, as Pillow's draft mode does."""
    reference = _predict(trained.onnx, isic_images, tmp_path)
    got = _json_lines([str(classify_binary), str(trained.onnx), *map(str, isic_images)])
    _compare(got, reference, EXACT_TOL, "C++ on the 32-px model (libjpeg scale_denom 4)")


def test_cpp_example_reports_bad_files_and_refuses_foreign_models(classify_binary: Path, trained,
                                                                  tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 64)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    done = subprocess.run([str(classify_binary), str(trained.onnx), str(bad), str(empty)], capture_output=True,
                          text=True, timeout=WAIT_S)
    assert done.returncode == 1  # nothing could be classified
    assert '"error": "corrupt or truncated JPEG' in done.stdout and "empty file (0 bytes)" in done.stdout
    text = tmp_path / "x.onnx"
    text.write_text("not a model")
    done = subprocess.run([str(classify_binary), str(text), str(bad)], capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 1 and done.stderr.startswith("error:")
