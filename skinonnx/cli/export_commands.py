"""`export`, `quantize` and `parity`: checkpoint -> checked ONNX files."""

from __future__ import annotations

from pathlib import Path

import click
from click.core import ParameterSource

from .options import (
    DEFAULT_ONNX,
    POSITIVE_INT,
    checkpoint_option,
    data_from_metadata,
    echo,
    onnx_option,
    provider_option,
    renamed_option,
    require_onnx,
    resolve_checkpoint_option,
    runs_dir_option,
)

# Every export option works on every path (single, TTA, fold ensemble: export/pipeline.py passes them all, and
# tests/export/test_export_options.py shows each one's effect per path), so there is no per-path table to check;
# what is checked before any work: an option that only tunes another, and two sources for the model.
EXPORT_PATHS = ("single", "ensemble", "tta")
NEEDS = {"fp16_tolerance": "fp16", "ood_accept": "ood"}  # an option that only tunes another: refused without it
CONFLICTS = (("run_dir", "checkpoint"),)  # two sources for the model



def parity_options(f):
    """--atol and --parity-images: the one declaration `export` and `parity` share."""
    f = click.option("--parity-images", type=click.IntRange(min=1), default=32, show_default=True,
                     help="Real validation images (seeded, class-stratified) both runtimes are compared on.")(f)
    return click.option("--atol", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
                        help="Largest allowed |ONNX - PyTorch| on every output; above it the command fails.")(f)

@click.command()
@checkpoint_option
@click.option("--output", "-o", type=click.Path(path_type=Path), default=DEFAULT_ONNX, show_default=True)
@click.option("--opset", type=click.IntRange(13, 21), default=17, show_default=True)
@click.option("--data", default=None, help="Data for the checks (default: the model's recorded training data).")
@parity_options
@click.option("--int8", is_flag=True,
              help="Also write OUTPUT with .int8.onnx: static INT8 calibrated on the training images and gated "
                   "against the fp32 file on the validation images (see the quantize command for the options).")
@click.option("--embed-preprocessing", is_flag=True,
              help="Also write OUTPUT's stem + .uint8.onnx: input uint8 RGB NHWC (decoded, resized), crop and "
                   "normalisation in the graph; parity-checked against the float model (atol 1e-5).")
@click.option("--fp16", is_flag=True,
              help="Also write OUTPUT's stem + .fp16.onnx: fp16 weights, float32 input/outputs; written only if all "
                   "labels agree with fp32 on validation images and probabilities within --fp16-tolerance.")
@click.option("--fp16-tolerance", type=click.FloatRange(min=0, min_open=True), default=0.01, show_default=True,
              help="Largest allowed |Δ probability| of the --fp16 copy.")
@click.option("--ort-format", is_flag=True,
              help="Also write .ort files (ONNX Runtime Mobile) of the written models, with the operator config for "
                   "a reduced build; checked to keep the metadata and the outputs.")
@click.option("--cam/--no-cam", default=True, show_default=True,
              help="Add the 'cam' output [N, h, w]: each layer4 cell's share of the malignant log-odds "
                   "(docs/EMBEDDING.md); an ensemble's or TTA model's is the mean over members and views.")
@click.option("--ood/--no-ood", default=True, show_default=True,
              help="Add the 'ood_score' output [N] (Mahalanobis distance of the pooled features to the training "
                   "images) and the metadata 'ood_threshold': images above it are reported as not assessed "
                   "(docs/SAFETY.md). Fitted on the training data's train and val splits (an ensemble: each "
                   "member on its own folds, the threshold out-of-fold).")
@click.option("--ood-accept", type=click.FloatRange(0.5, 1.0, max_open=True), default=0.95, show_default=True,
              help="Share of validation (out-of-fold for an ensemble) images the OOD threshold accepts.")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), default=None,
              help="A cross-validation run folder (RUNS_DIR/NAME from `train --folds K`): export all its folds as "
                   "one ensemble. Default: the newest CV run under --runs-dir when newer than the newest single run.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
              help="Test-time augmentation inside the graph: the mean logits over 2 views (horizontal flip) or 8 "
                   "(all flips and right-angle rotations).")
@click.option("--triton-repo", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also write a Triton model repository of OUTPUT: DIR/<stem>/config.pbtxt, 1/model.onnx, labels.txt "
                   "(docs/SERVE.md).")
@provider_option("cpu")
@runs_dir_option
@click.pass_context
def export(ctx: click.Context, checkpoint: str | None, output: Path, opset: int, data: str | None, atol: float,
           parity_images: int, int8: bool, embed_preprocessing: bool, fp16: bool, fp16_tolerance: float,
           ort_format: bool, cam: bool, ood: bool, ood_accept: float, run_dir: Path | None, tta: str,
           triton_repo: Path | None, provider: str,
           runs_dir: Path) -> None:
    """Export a checkpoint (default: the newest run's best.pt), or a cross-validation run's folds as one
    ensemble, to a self-describing ONNX file (checked, parity-tested, atomic)."""
    from ..atomic import onnx_output

    _check_export_options(ctx)
    onnx_output(output)
    run_dir = _cv_source(checkpoint, run_dir, runs_dir)
    source = run_dir if run_dir is not None else resolve_checkpoint_option(checkpoint, runs_dir, finished_only=True)
    from ..export.pipeline import Variants, run_export

    variants = Variants(int8, fp16, fp16_tolerance, ort_format, triton_repo)
    result = run_export(source, output, ensemble=run_dir is not None, tta=tta, variants=variants, data=data,
                        provider=provider, echo=echo, opset=opset, atol=atol, parity_images=parity_images,
                        embed_preprocessing=embed_preprocessing, cam=cam, ood=ood, ood_accept=ood_accept)
    c = result.contract
    what = "".join([f", ensemble of {result.members} folds" if run_dir is not None else "",
                    f", TTA {tta}" if tta != "none" else ""])
    click.echo(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB{what}): classes {list(c.classes)}, "
               f"threshold {c.threshold:.4f} ({c.threshold_policy}), temperature {c.temperature:.3f}")
    if result.uint8_path is not None:
        click.echo(f"wrote {result.uint8_path} (input 'image': uint8 [N, H, W, 3] RGB, shorter side resized to "
                   f"{c.preprocessing.resize_size}; see docs/EMBEDDING.md)")
    for line in variants.written:
        click.echo(line)


def _check_export_options(ctx: click.Context) -> None:
    """NEEDS and CONFLICTS against the options the user gave (not their defaults)."""
    given = {p.name for p in ctx.command.params if ctx.get_parameter_source(p.name) is not ParameterSource.DEFAULT}
    spell = {p.name: "/".join([*p.opts, *p.secondary_opts]) for p in ctx.command.params}
    for name, needs in NEEDS.items():
        if name in given and not ctx.params[needs]:
            raise click.UsageError(f"{spell[name]} tunes {spell[needs]}: give {spell[needs]} too", ctx)
    for a, b in CONFLICTS:
        if {a, b} <= given:
            raise click.UsageError(f"{spell[a]} and {spell[b]} both name the model to export: give one", ctx)


def _cv_source(checkpoint: str | None, run_dir: Path | None, runs_dir: Path) -> Path | None:
    """The CV run to export: --run, a --checkpoint that names a CV run, or (neither given) the newest CV run
    under --runs-dir when no single-model run is newer."""
    from ..training.runs import default_model_run, is_cv_run

    if run_dir is not None:
        return run_dir
    if checkpoint is not None:
        named = Path(checkpoint) if Path(checkpoint).exists() else runs_dir / checkpoint
        return named if is_cv_run(named) else None
    newest = default_model_run(runs_dir)
    if newest is None or not is_cv_run(newest):
        return None
    click.echo(f"exporting the newest cross-validation run {newest} (pass --checkpoint for a single model)")
    return newest


@click.command()
@onnx_option(help="The fp32 skinonnx model.")
@click.option("--output", "-o", type=click.Path(path_type=Path), default=None,
              help="INT8 model path (default: ONNX with .int8.onnx, e.g. model.onnx -> model.int8.onnx).")
@click.option("--data", default=None,
              help="The data the model was trained on: calibration uses its train split, the gate its val split "
                   "(default: the training data recorded in the model's metadata).")
@click.option("--calibration-images", type=POSITIVE_INT, default=128, show_default=True,
              help="Training images used to measure activation ranges (a seeded subset when there are more).")
@click.option("--calibrate-method", type=click.Choice(["minmax", "percentile", "entropy"]), default="minmax",
              show_default=True, help="How activation ranges are set from the calibration images.")
@click.option("--reduce-range/--no-reduce-range", default=True, show_default=True,
              help="7-bit weights: no int16 saturation on AVX2/AVX-512 CPUs without VNNI.")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=0.98, show_default=True,
              help="Gate: least fraction of validation images whose label INT8 and fp32 agree on.")
@click.option("--max-auc-change", type=click.FloatRange(0, 1), default=0.01, show_default=True,
              help="Gate: largest allowed |ROC-AUC(INT8) - ROC-AUC(fp32)| on the validation images.")
@click.option("--gate-split", type=click.Choice(["val", "test"]), default="val", show_default=True,
              help="The split the gate compares INT8 and fp32 on.")
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
    from ..export.pipeline import quantize_line

    click.echo(quantize_line(onnx_path, output, data, {
        "calibration_images": calibration_images, "method": calibrate_method, "reduce_range": reduce_range,
        "min_agreement": min_agreement, "max_auc_change": max_auc_change, "gate_split": gate_split,
        "gate_images": gate_images, "bias_correction": bias_correction, "keep_fp32": tuple(keep_fp32),
        "seed": seed}))


@click.command()
@click.option("--checkpoint", default=None, metavar="FILE|RUN",
              help="A checkpoint file, or a run (folder or name under --runs-dir) for its weights/best.pt; for an "
                   "ensemble the CV run (default: the newest run, or the run in the ensemble's metadata).")
@onnx_option()
@click.option("--data", default=None, help="Real images for the check (default: the checkpoint's data).")
@parity_options
@renamed_option("--images", "--parity-images", "parity_images", type=click.IntRange(min=1))
@provider_option("cpu")
@runs_dir_option
def parity(checkpoint: str | None, onnx_path: Path, data: str | None, atol: float, parity_images: int,
           provider: str, runs_dir: Path) -> None:
    """Compare an ONNX file with its checkpoint (or CV run folder) on real images; exit 1 above tolerance."""
    require_onnx(onnx_path)  # before torch loads: a usage error answers at once
    from ..export.ensemble import recheck_parity
    from ..reporting.provenance import write_parity_record

    report, source = recheck_parity(checkpoint, onnx_path, data, runs_dir=runs_dir, atol=atol,
                                    n_images=parity_images, provider=provider, echo=echo)
    click.echo(report.text())
    record = write_parity_record(onnx_path, report.to_dict(), source=source)
    click.echo(f"parity ok (recorded in {record})")
