"""`export --ort-format`: the ORT format that ONNX Runtime Mobile (Android, iOS) and minimal builds load.

Converted by ONNX Runtime's own tool (``onnxruntime.tools.convert_onnx_models_to_ort``, "Fixed"
optimization style, no x86-only NCHWc layouts, so the file runs on ARM too), which also writes the
operator config a reduced ONNX Runtime build needs (``<stem>.required_operators.config``; pass it to
``build.sh --include_ops_by_config``). The ORT format keeps ``metadata_props``: the file is checked to
carry every key of the source, and to give the same labels and probabilities (float round-off only:
the graph is optimised at conversion, as ONNX Runtime would at load) on real images before it
appears under its final name. No torch here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_path
from ..deploy.runtime import OnnxClassifier
from ..errors import ExportError
from .checks import Comparison, compare_files, load_parity_images, real_images

ORT_ATOL = 1e-4  # fused kernels reorder float sums; measured ~1e-7


def ort_paths_for(onnx_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``model.onnx`` -> (``model.ort``, ``model.required_operators.config``)."""
    path = Path(onnx_path)
    return path.with_suffix(".ort"), path.with_name(f"{path.stem}.required_operators.config")


@dataclass
class OrtFormatResult:
    path: Path
    config_path: Path
    gate: Comparison
    seconds: float


def convert(onnx_path: Path, workdir: Path) -> tuple[Path, Path]:
    """Run ONNX Runtime's converter on one file into ``workdir``; return (model.ort, operator config)."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    source = workdir / "src" / f"{onnx_path.stem}.onnx"  # the tool converts every .onnx beside its input
    source.parent.mkdir()
    try:
        os.link(onnx_path, source)
    except OSError:
        shutil.copy(onnx_path, source)
    log, logger = io.StringIO(), logging.getLogger("ort_format_model.utils")
    level = logger.level
    logger.setLevel(logging.WARNING)  # it logs where it wrote the config (a temp folder) at INFO
    try:
        with contextlib.redirect_stdout(log):
            convert_onnx_models_to_ort(source, output_dir=workdir / "out",
                                       optimization_styles=[OptimizationStyle.Fixed])
    except Exception as exc:  # the tool raises whatever ONNX Runtime raised
        raise ExportError(f"ORT-format conversion of {onnx_path} failed: {str(exc).splitlines()[0][:300]}") from None
    finally:
        logger.setLevel(level)
    return workdir / "out" / f"{onnx_path.stem}.ort", workdir / "out" / f"{onnx_path.stem}.required_operators.config"


def export_ort_format(onnx_path: str | os.PathLike[str], data: str | os.PathLike[str], *,
                      n_images: int = 16, atol: float = ORT_ATOL, provider: str = "cpu", echo=print) -> OrtFormatResult:
    """Write ``<stem>.ort`` and its operator config beside ``onnx_path``, after the metadata and output checks."""
    t0 = time.perf_counter()
    onnx_path = Path(onnx_path)
    target, config_target = ort_paths_for(onnx_path)
    source = OnnxClassifier(onnx_path, provider)
    with tempfile.TemporaryDirectory(prefix=".ort-", dir=onnx_path.parent) as tmp:
        ort_file, config = convert(onnx_path, Path(tmp))
        converted = OnnxClassifier(ort_file, provider)
        lost = {k: v for k, v in source.metadata.items() if converted.metadata.get(k) != v}
        if lost:
            raise ExportError(f"the ORT-format file lost or changed metadata keys: {', '.join(sorted(lost))}")
        paths, where = real_images(data, n_images)
        batch = (np.stack([source.preprocessing.pixels_from_file(p) for p in paths]) if source.takes_uint8
                 else load_parity_images(paths, source.preprocessing, n_images))
        gate = compare_files(onnx_path, ort_file, batch, {"probabilities": atol}, f"{target.name} vs {onnx_path.name}",
                             provider=provider)
        echo(gate.text() + f"; metadata: all {len(source.metadata)} keys kept [{where}]")
        gate.require("ORT-format check", target)
        for src, dst in ((config, config_target), (ort_file, target)):
            with atomic_path(dst) as out:
                os.replace(src, out)
    return OrtFormatResult(target, config_target, gate, time.perf_counter() - t0)
