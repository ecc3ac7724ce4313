"""`export`, `quantize` and `parity`: checkpoint -> checked ONNX files."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SkinOnnxError
from .options import POSITIVE_INT, echo, provider_option


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), default=Path("checkpoints/best.pt"), show_default=True)
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
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="A cross-validation run folder (runs/NAME from `train --folds K`): export all its folds as one "
                   "ensemble. Default: the newest CV run under runs/ when it is newer than --checkpoint.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
              help="Test-time augmentation inside the graph: the mean logits over 2 views (horizontal flip) or 8 "
                   "(all flips and right-angle rotations).")
@provider_option("cpu")
def export(checkpoint: Path, output: Path, opset: int, data: str | None, atol: float, parity_images: int,
           int8: bool, embed_preprocessing: bool, run_dir: Path | None, tta: str, provider: str) -> None:
    """Export a checkpoint (or a cross-validation run's folds) to a self-describing ONNX file."""
    from ..export.onnx_export import export as run_export

    run_dir = _cv_source(checkpoint, run_dir)
    if run_dir is not None or tta != "none":
        _export_ensemble(checkpoint, run_dir, output, tta, int8, dict(
            opset=opset, data=data, atol=atol, parity_images=parity_images, provider=provider,
            embed_preprocessing=embed_preprocessing))
        return
    result = run_export(checkpoint, output, opset=opset, data=data, atol=atol, parity_images=parity_images,
                        provider=provider, embed_preprocessing=embed_preprocessing, echo=echo)
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


def _cv_source(checkpoint: Path, run_dir: Path | None) -> Path | None:
    """The CV run to export: --run, a --checkpoint that is a run folder, or (neither given) the newest
    CV run under runs/ when it is newer than the default checkpoint."""
    from click.core import ParameterSource

    from ..training.cross_validation import CV_FILE, is_cv_run, newest_cv_run

    if run_dir is not None:
        return run_dir
    if is_cv_run(checkpoint):
        return checkpoint
    if click.get_current_context().get_parameter_source("checkpoint") != ParameterSource.DEFAULT:
        return None
    newest = newest_cv_run("runs")
    if newest is None or (checkpoint.is_file() and checkpoint.stat().st_mtime > (newest / CV_FILE).stat().st_mtime):
        return None
    click.echo(f"exporting the newest cross-validation run {newest} (pass --checkpoint for a single model)")
    return newest


def _export_ensemble(checkpoint: Path, run_dir: Path | None, output: Path, tta: str, int8: bool, options: dict) -> None:
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
@click.option("--data", required=True,
              help="The data the model was trained on: calibration uses its train split, the gate its val split.")
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
def quantize(onnx_path: Path, output: Path | None, data: str, calibration_images: int, calibrate_method: str,
             reduce_range: bool, min_agreement: float, max_auc_change: float, gate_split: str, gate_images: int,
             bias_correction: bool, keep_fp32: tuple[str, ...], seed: int) -> None:
    """Static INT8 (QDQ) copy of an fp32 model, written only if it passes the accuracy gate."""
    _run_quantize(onnx_path, output, data, {
        "calibration_images": calibration_images, "method": calibrate_method, "reduce_range": reduce_range,
        "min_agreement": min_agreement, "max_auc_change": max_auc_change, "gate_split": gate_split,
        "gate_images": gate_images, "bias_correction": bias_correction, "keep_fp32": tuple(keep_fp32),
        "seed": seed})


@click.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), default=Path("checkpoints/best.pt"), show_default=True,
              help="The checkpoint exported, or for an ensemble the CV run folder (default: the run in its metadata).")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--data", default=None, help="Real images for the check (default: the checkpoint's data).")
@click.option("--atol", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--images", "n_images", type=click.IntRange(min=1), default=32, show_default=True)
@provider_option("cpu")
def parity(checkpoint: Path, onnx_path: Path, data: str | None, atol: float, n_images: int, provider: str) -> None:
    """Compare an ONNX file with its checkpoint (or CV run folder) on real images; exit 1 above tolerance."""
    from ..export.ensemble import is_ensemble_or_tta, recheck_parity
    from ..export.onnx_export import parity_images_for
    from ..export.parity import check_parity
    from ..training.checkpoint import load_checkpoint, model_from_checkpoint

    if is_ensemble_or_tta(onnx_path):  # the file says what to rebuild in PyTorch: members, TTA views, T
        report, source = recheck_parity(checkpoint, onnx_path, data, atol=atol, n_images=n_images, provider=provider,
                                        echo=echo)
        _record_parity(onnx_path, report, source)
        return
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
