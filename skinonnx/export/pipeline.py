"""`export` as one function: the model's path (single, TTA, fold ensemble), the checked file, its variants
(INT8, fp16, ORT format, each checked on real images) and a Triton repository. The CLI parses and prints."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .onnx_export import ExportResult


@dataclass
class Variants:
    """What to write beside the exported file (``export --int8 --fp16 --ort-format --triton-repo``)."""

    int8: bool = False
    fp16: bool = False
    fp16_tolerance: float = 0.01
    ort_format: bool = False
    triton_repo: Path | None = None
    written: list[str] = field(default_factory=list)  # one line per file written, for the CLI to print


def run_export(source: Path, output: Path, *, ensemble: bool, tta: str, variants: Variants, data: str | None,
               provider: str, echo: Callable[[str], None] = print, **options: Any) -> ExportResult:
    """Export ``source`` (a checkpoint, or with ``ensemble`` a CV run folder) to ``output``, then its variants.
    ``options``: opset, atol, parity_images, embed_preprocessing, cam, ood, ood_accept (every path takes them)."""
    from .ensemble import export_cv_run, export_single_tta
    from .onnx_export import export as export_single

    common = dict(data=data, provider=provider, echo=echo, **options)
    if ensemble:
        result = export_cv_run(source, output, tta=tta, **common)
    elif tta != "none":
        result = export_single_tta(source, output, tta=tta, **common)
    else:
        result = export_single(source, output, **common)
    write_variants(result, data, variants, provider=provider, echo=echo)
    track_export(result.path, result.contract.extra.get("training_run_dir"), echo=echo)
    return result


def track_export(path: Path, run_dir: str | None, *, echo: Callable[[str], None] = print) -> None:
    """A tracked run (train --track): log the ONNX file as an MLflow model and register a new version."""
    from ..tracking.run_record import read_record

    if run_dir and read_record(run_dir) is not None:  # MLflow is imported only for a tracked run
        from ..tracking.registry import log_exported_model

        log_exported_model(path, run_dir, echo=echo)


def write_variants(result: ExportResult, data: str | None, variants: Variants, *, provider: str,
                   echo: Callable[[str], None] = print) -> None:
    """INT8, fp16 and ORT-format copies of the files just written, each checked on the model's real images (its
    recorded training data unless ``data``) with ``provider``; a copy that fails is not written. Then Triton."""
    if variants.int8 or variants.fp16 or variants.ort_format:
        from ..data.training_data import model_data

        root = model_data(data, result.contract.extra.get("training_data"),
                          needed_for=f"{result.path} is written; --int8/--fp16/--ort-format")
        if variants.int8:
            variants.written.append(quantize_line(result.path, None, root, {}, provider=provider, echo=echo))
        if variants.fp16:
            from .fp16 import export_fp16

            half = export_fp16(result.path, root, max_prob_diff=variants.fp16_tolerance, provider=provider, echo=echo)
            variants.written.append(f"wrote {half.path} ({half.path.stat().st_size / 1e6:.1f} MB, fp16 weights, "
                                    "float32 in/out)")
        if variants.ort_format:
            from .ort_format import export_ort_format

            for model in [result.path] + ([result.uint8_path] if result.uint8_path else []):
                done = export_ort_format(model, root, provider=provider, echo=echo)
                variants.written.append(f"wrote {done.path} ({done.path.stat().st_size / 1e6:.1f} MB, ORT format), "
                                        f"{done.config_path}")
    if variants.triton_repo is not None:
        from ..deploy.triton_repo import write_triton_repo

        folder = write_triton_repo(result.path, variants.triton_repo)
        variants.written.append(f"wrote Triton model repository {folder}/")


def quantize_line(onnx_path: Path, output: Path | None, data: str | os.PathLike[str], options: dict[str, Any], *,
                  provider: str = "cpu", echo: Callable[[str], None] = print) -> str:
    """`quantize` (and `export --int8`): the gated INT8 copy; returns the line that says what was written."""
    from .quantize import QuantizeSettings, quantize_model

    q = quantize_model(onnx_path, output, str(data), QuantizeSettings(**options), provider=provider, echo=echo)
    return (f"wrote {q.path} ({q.path.stat().st_size / 1e6:.1f} MB, INT8 QDQ, calibrated on {q.calibration_images} "
            f"images) in {q.seconds:.0f} s")
