"""`export`, `quantize` and `parity`: checkpoint -> checked ONNX files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import SkinOnnxError
from .options import (
    POSITIVE_INT,
    checkpoint_option,
    data_from_metadata,
    echo,
    provider_option,
    require_onnx,
    resolve_checkpoint_option,
)

if TYPE_CHECKING:
    from ..export.onnx_export import ExportResult


@click.command()
@checkpoint_option
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True)
@click.option("--data", default=None, help="Data for the parity check (default: the checkpoint's training data).")
@click.option("--atol", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="Parity tolerance on probabilities and logits; above it the export fails.")
@click.option("--parity-images", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--int8", is_flag=True,
              help="Also write OUTPUT with .int8.onnx: static INT8 calibrated on the training images and gated "
                   "against the fp32 file on the validation images (see the quantize command for the options).")
@click.option("--embed-preprocessing", is_flag=True,
              help="Also write OUTPUT's stem + .uint8.onnx: input uint8 RGB NHWC (decoded, resized), crop and "
                   "normalisation in the graph; parity-checked against the float model (atol 1e-5).")
@click.option("--fp16", is_flag=True,
              help="Also write OUTPUT's stem + .fp16.onnx: fp16 weights, float32 input/outputs; written only if all "
                   "labels agree with fp32 on validation images and probabilities within --fp16-tolerance.")
@click.option("--fp16-tolerance", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True)
@click.option("--ort-format", is_flag=True,
              help="Also write .ort files (ONNX Runtime Mobile) of the written models, with the operator config for "
                   "a reduced build; checked to keep the metadata and the outputs.")
@click.option("--cam/--no-cam", default=True, show_default=True,
              help="Add the 'cam' output [N, h, w]: each layer4 cell's share of the malignant log-odds "
                   "(docs/EMBEDDING.md).")
@click.option("--ood/--no-ood", default=True, show_default=True,
              help="Add the 'ood_score' output [N] (Mahalanobis distance of the pooled features to the training "
                   "images) and the metadata 'ood_threshold': images above it are reported as not assessed "
                   "(docs/SAFETY.md). Fitted on the training data's train and val splits.")
@click.option("--ood-accept", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="Share of validation (out-of-fold for an ensemble) images the OOD threshold accepts.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="A cross-validation run folder (runs/NAME from `train --folds K`): export all its folds as one "
                   "ensemble. Default: the newest CV run under runs/ when it is newer than the newest single run.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
              help="Test-time augmentation inside the graph: the mean logits over 2 views (horizontal flip) or 8 "
                   "(all flips and right-angle rotations).")
@provider_option("cpu")
def export(checkpoint: str | None, output: Path, opset: int, data: str | None, atol: float, parity_images: int,
           int8: bool, embed_preprocessing: bool, fp16: bool, fp16_tolerance: float, ort_format: bool, cam: bool,
           ood: bool, ood_accept: float, run_dir: Path | None, tta: str, provider: str) -> None:
    """Export a checkpoint (default: the newest run's best.pt), or a cross-validation run's folds as one
    ensemble, to a self-describing ONNX file (checked, parity-tested, atomic)."""
    from ..export.onnx_export import export as run_export

    run_dir = _cv_source(checkpoint, run_dir)
    if run_dir is not None or tta != "none":
        _export_ensemble(None if run_dir is not None else resolve_checkpoint_option(checkpoint), run_dir, output,
                         tta, int8, dict(opset=opset, data=data, atol=atol, parity_images=parity_images,
                                         provider=provider, embed_preprocessing=embed_preprocessing, ood=ood,
                                         ood_accept=ood_accept))
        return
    checkpoint = resolve_checkpoint_option(checkpoint)
    result = run_export(checkpoint, output, opset=opset, data=data, atol=atol, parity_images=parity_images,
                        provider=provider, embed_preprocessing=embed_preprocessing, cam=cam, ood=ood,
                        ood_accept=ood_accept, echo=echo)
    c = result.contract
    click.echo(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB): classes {list(c.classes)}, "
               f"threshold {c.threshold:.4f} ({c.threshold_policy}), temperature {c.temperature:.3f}")
    if result.uint8_path is not None:
        click.echo(f"wrote {result.uint8_path} (input 'image': uint8 [N, H, W, 3] RGB, shorter side resized to "
                   f"{c.preprocessing.resize_size}; see docs/EMBEDDING.md)")
    if int8:
        from ..training.checkpoint import load_checkpoint

        root = data or load_checkpoint(checkpoint).get("data_root")
        if not root or not Path(root).exists():
            raise SkinOnnxError(f"{result.path} written; --int8 needs the training data: pass --data DIR")
        _run_quantize(result.path, None, str(root), {})
    if fp16 or ort_format:
        _write_variants(result, data, fp16=fp16, fp16_tolerance=fp16_tolerance, ort_format=ort_format)


def _write_variants(result: ExportResult, data: str | None, *, fp16: bool, fp16_tolerance: float,
                    ort_format: bool) -> None:
    """--fp16 and --ort-format: converted copies of the files just written, each checked on real images."""
    root = data or result.contract.extra.get("training_data")
    if not root or not Path(root).exists():
        raise SkinOnnxError(f"{result.path} written; --fp16/--ort-format check on real images: pass --data DIR")
    if fp16:
        from ..export.fp16 import export_fp16

        half = export_fp16(result.path, root, max_prob_diff=fp16_tolerance, echo=echo)
        click.echo(f"wrote {half.path} ({half.path.stat().st_size / 1e6:.1f} MB, fp16 weights, float32 in/out)")
    if ort_format:
        from ..export.ort_format import export_ort_format

        for model in [result.path] + ([result.uint8_path] if result.uint8_path else []):
            done = export_ort_format(model, root, echo=echo)
            click.echo(f"wrote {done.path} ({done.path.stat().st_size / 1e6:.1f} MB, ORT format), {done.config_path}")


def _cv_source(checkpoint: str | None, run_dir: Path | None) -> Path | None:
    """The CV run to export: --run, a --checkpoint that names a CV run, or (neither given) the newest CV run
    under runs/ when no single-model run is newer."""
    from ..training.cross_validation import CV_FILE, is_cv_run, newest_cv_run
    from ..training.runs import list_runs

    if run_dir is not None:
        return run_dir
    if checkpoint is not None:
        named = Path(checkpoint) if Path(checkpoint).exists() else Path("runs") / checkpoint
        return named if is_cv_run(named) else None
    newest = newest_cv_run("runs")
    if newest is None:
        return None
    singles = [r for r in list_runs("runs") if not is_cv_run(r) and (r / "weights" / "best.pt").is_file()]
    if singles and (singles[0] / "weights" / "best.pt").stat().st_mtime > (newest / CV_FILE).stat().st_mtime:
        return None
    click.echo(f"exporting the newest cross-validation run {newest} (pass --checkpoint for a single model)")
    return newest


def _export_ensemble(checkpoint: Path | None, run_dir: Path | None, output: Path, tta: str, int8: bool,
                     options: dict) -> None:
    from ..export.ensemble import export_cv_run, export_single_tta

    if run_dir is not None:
        result = export_cv_run(run_dir, output, tta=tta, echo=echo, **options)
    else:
        result = export_single_tta(checkpoint, output, tta=tta, echo=echo, **options)
    c = result.contract
    what = f"ensemble of {result.members} folds" if run_dir is not None else "single model"
    click.echo(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB, {what}"
               f"{', TTA ' + tta if tta != 'none' else ''}): threshold {c.threshold:.4f} ({c.threshold_policy}), "
               f"temperature {c.temperature:.3f}")
    if result.uint8_path is not None:
        click.echo(f"wrote {result.uint8_path} (input 'image': uint8 [N, H, W, 3] RGB)")
    if int8:
        root = options["data"] or c.extra.get("training_data")
        if not root or not Path(root).exists():
            raise SkinOnnxError(f"{result.path} written; --int8 needs the training data: pass --data DIR")
        _run_quantize(result.path, None, str(root), {})


def _run_quantize(onnx_path: Path, output: Path | None, data: str, options: dict) -> None:
    from ..export.quantize import QuantizeSettings, quantize_model

    q = quantize_model(onnx_path, output, data, QuantizeSettings(**options), echo=echo)
    size = q.path.stat().st_size / 1e6
    click.echo(f"wrote {q.path} ({size:.1f} MB, INT8 QDQ, calibrated on {q.calibration_images} images) in "
               f"{q.seconds:.0f} s")


@click.command()
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True, help="The fp32 skinonnx model.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="INT8 model path (default: ONNX with .int8.onnx, e.g. exports/model.int8.onnx).")
@click.option("--data", default=None,
              help="The data the model was trained on: calibration uses its train split, the gate its val split "
                   "(default: the training data recorded in the model's metadata).")
@click.option("--calibration-images", type=POSITIVE_INT, default=128, show_default=True,
              help="Training images used to measure activation ranges (a seeded subset when there are more).")
@click.option("--calibrate-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True)
@click.option("--reduce-range/--no-reduce-range", default=True, show_default=True,
              help="7-bit weights: no int16 saturation on AVX2/AVX-512 CPUs without VNNI.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.98, show_default=True,
              help="Gate: least fraction of validation images whose label INT8 and fp32 agree on.")
@click.option("--max-auc-change", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Gate: largest allowed |ROC-AUC(INT8) - ROC-AUC(fp32)| on the validation images.")
@click.option("--gate-split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@click.option("--gate-images", type=click.IntRange(min=0), default=0, show_default=True,
              help="Gate on a seeded, class-stratified subset of this many images (0: the whole split).")
@click.option("--bias-correction/--no-bias-correction", default=True, show_default=True,
              help="Remove INT8's mean logit shift, measured on the calibration images, via the classifier bias.")
@click.option("--keep-fp32", multiple=True, type=click.Choice(["stem", "layer1", "layer2", "layer3", "layer4"]),
              help="Leave this ResNet stage unquantized (repeatable); layer4 is ~20 % of the FLOPs.")
@click.option("--seed", type=int, default=0, show_default=True)
def quantize(onnx_path: Path, output: Path | None, data: str | None, calibration_images: int, calibrate_method: str,
             reduce_range: bool, min_agreement: float, max_auc_change: float, gate_split: str, gate_images: int,
             bias_correction: bool, keep_fp32: tuple[str, ...], seed: int) -> None:
    """Static INT8 (QDQ) copy of an fp32 model, written only if it passes the accuracy gate."""
    from ..deploy.info import read_header

    require_onnx(onnx_path)
    data = data_from_metadata(data, read_header(onnx_path).metadata)
    _run_quantize(onnx_path, output, data, {
        "calibration_images": calibration_images, "method": calibrate_method, "reduce_range": reduce_range,
        "min_agreement": min_agreement, "max_auc_change": max_auc_change, "gate_split": gate_split,
        "gate_images": gate_images, "bias_correction": bias_correction, "keep_fp32": tuple(keep_fp32),
        "seed": seed})


@click.command()
@click.option("--checkpoint", default=None, metavar="FILE|RUN",
              help="A checkpoint file, or a run (folder or name under runs/) for its weights/best.pt; for an "
                   "ensemble the CV run folder (default: the newest run, or the run in the ensemble's metadata).")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--data", default=None, help="Real images for the check (default: the checkpoint's data).")
@click.option("--atol", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--images", "n_images", type=click.IntRange(min=1), default=32, show_default=True)
@provider_option("cpu")
def parity(checkpoint: str | None, onnx_path: Path, data: str | None, atol: float, n_images: int,
           provider: str) -> None:
    """Compare an ONNX file with its checkpoint (or CV run folder) on real images; exit 1 above tolerance."""
    from ..export.ensemble import is_ensemble_or_tta, recheck_parity
    from ..export.onnx_export import parity_images_for
    from ..export.parity import check_parity
    from ..training.checkpoint import load_checkpoint, model_from_checkpoint

    if is_ensemble_or_tta(onnx_path):  # the file says what to rebuild in PyTorch: members, TTA views, T
        report, source = recheck_parity(None if checkpoint is None else Path(checkpoint), onnx_path, data,
                                        atol=atol, n_images=n_images, provider=provider, echo=echo)
        _record_parity(onnx_path, report, source)
        return
    checkpoint = resolve_checkpoint_option(checkpoint)
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    batch, source = parity_images_for(state, data, n_images)
    click.echo(f"parity images: {source}")
    temperature = float((state.get("calibration") or {}).get("temperature", 1.0))
    report = check_parity(model, onnx_path, batch, temperature=temperature, atol=atol, provider=provider)
    _record_parity(onnx_path, report, source)


def _record_parity(onnx_path: Path, report, source: str) -> None:
    from ..evaluation.provenance import write_parity_record

    click.echo(report.text())
    record = write_parity_record(onnx_path, report.to_dict(), source=source)
    click.echo(f"parity ok (recorded in {record})")
