"""Builders for the bad-input catalogue: hostile or odd files made byte by byte, plus CLI helpers.

Nothing here is a fixture; each test builds only what it needs, in its own tmp_path.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from skinonnx.data.preprocessing import Preprocessing
from skinonnx.deploy.contract import ModelContract
from tests.waits import WAIT_S

from .conftest import run_cli

REPO = Path(__file__).resolve().parents[1]


# --- CLI -------------------------------------------------------------------------------------
def cli_error(*args: object, code: int = 1, says: Sequence[str] = ()) -> str:
    """Run the CLI expecting failure: exit ``code``, no traceback, one ``Error:`` line containing ``says``."""
    result = run_cli(*args, expect=code)
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, f"expected one error line, got:\n{result.output}"
    for text in says:
        assert text in errors[0], f"{text!r} not in {errors[0]!r}"
    return errors[0]


def cli_ok(*args: object) -> str:
    result = run_cli(*args, expect=0)
    assert "Traceback" not in result.output
    return result.output


def python_subprocess(code: str, *args: str, user_prefix: Sequence[str] = (), timeout: float = WAIT_S,
                      **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -c code`` from the repo root with this worktree's package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*user_prefix, sys.executable, "-c", code, *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def unprivileged_prefix() -> list[str] | None:
    """Command prefix that drops root (root ignores file modes); [] when not root; None when impossible."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if not setpriv:
        return None
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


# --- images ----------------------------------------------------------------------------------
def rgb_pattern(width: int = 24, height: int = 24, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: Sequence[bytes] | None = None,
              row: bytes | None = None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB, nor bombs cheaply).

    ``rows``: every scanline's raw bytes; ``row``: one scanline repeated ``height`` times,
    streamed through zlib so a 30000x30000 image costs a fraction of a second.
    """
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    packer = zlib.compressobj(9)
    parts = []
    for line in (rows if rows is not None else (row for _ in range(height))):
        parts.append(packer.compress(b"\x00" + line))
    parts.append(packer.flush())
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def write_png16_rgb(path: Path, values: np.ndarray) -> None:
    """``values``: (H, W, 3) uint16, written as a true 16-bit-per-channel RGB PNG."""
    h, w, _ = values.shape
    path.write_bytes(png_bytes(w, h, 16, 2, rows=[values[y].astype(">u2").tobytes() for y in range(h)]))


def write_png_bomb(path: Path, side: int = 30000) -> None:
    """A complete, valid 1-bit PNG of side x side pixels (~110 KB on disk; ~2.7 GB as RGB)."""
    path.write_bytes(png_bytes(side, side, 1, 0, row=bytes((side + 7) // 8)))


def write_bmp_bomb(path: Path, side: int = 30000) -> None:
    """A 54-byte BMP header that claims side x side 24-bit pixels and carries none of them."""
    header = struct.pack("<2sIHHI", b"BM", 54 + side * side * 3, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, side, side, 1, 24, 0, side * side * 3, 2835, 2835, 0, 0)
    path.write_bytes(header + info)


def jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kwargs)
    return buf.getvalue()


def write_tiny_pngs(folder: Path, count: int, size: int = 16, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:03d}.png"
        rgb_pattern(size, size, seed + i).save(path)
        paths.append(path)
    return paths


def make_imagefolder(root: Path, layout: dict[str, dict[str, int]], size: int = 24) -> Path:
    """``layout``: {split or "": {class: n_images}}; "" makes a flat (unsplit) class folder."""
    seed = 0
    for split, classes in layout.items():
        for cls, n in classes.items():
            folder = root / split / cls if split else root / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rgb_pattern(size, size, seed).save(folder / f"{cls}_{i:02d}.png")
                seed += 1
    return root


# --- models ----------------------------------------------------------------------------------
def tiny_onnx(path: Path, *, image_size: int = 16, input_shape: Sequence[int | str] | None = None,
              n_outputs: int = 2, metadata: bool = True, meta_size: int | None = None,
              classes: Sequence[str] = ("benign", "malignant"), extra_meta: dict[str, str] | None = None) -> Path:
    """A real, tiny classifier (global average pool -> linear -> softmax) with skinonnx metadata.

    Its positive-class probability grows with the red channel's mean, so predictions vary with
    the image. ``input_shape`` overrides the declared input (e.g. a fixed [1, 3, 48, 48]).
    """
    shape = list(input_shape) if input_shape is not None else ["batch", 3, image_size, image_size]
    features = shape[1]  # channels for rank-4 inputs (pooled), the flat length for rank 2
    weight = np.zeros((features, n_outputs), np.float32)
    weight[0, -1] = 4.0
    bias = np.zeros(n_outputs, np.float32)
    pool = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"])] if len(shape) == 4 else [
        helper.make_node("Identity", ["input"], ["pooled"])]
    graph = helper.make_graph(
        [*pool,
         helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "W", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", n_outputs]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_outputs])],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        contract = ModelContract(classes=tuple(classes), positive_index=len(classes) - 1,
                                 preprocessing=Preprocessing.for_size(meta_size or image_size))
        meta = {**contract.to_metadata(), **(extra_meta or {})}
        for key, value in meta.items():
            model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
