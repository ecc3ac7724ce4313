"""Command line: a click group; heavy imports (torch) happen inside the commands that need them.

`test`, `predict` and `info`-like paths import no torch, so a deploy machine needs only
onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import __version__
from .errors import SkinOnnxError
from .images import DEFAULT_MAX_PIXELS

PROVIDERS = click.Choice(["auto", "cpu", "cuda", "tensorrt"])
POSITIVE_INT = click.IntRange(min=1)


def _echo(msg: str) -> None:
    click.echo(msg)


def provider_option(default: str = "auto"):
    return click.option("--provider", type=PROVIDERS, default=default, show_default=True,
                        help="ONNX Runtime execution provider; cuda/tensorrt never fall back to CPU silently.")


def max_pixels_option(f):
    return click.option("--max-pixels", type=POSITIVE_INT, default=DEFAULT_MAX_PIXELS, show_default=True,
                        help="Refuse images with more pixels than this (decompression-bomb guard).")(f)


def contract_options(f):
    """Options for ONNX files without skinonnx metadata (all three of size/mean/std are needed)."""
    f = click.option("--classes", default=None, help="Comma-separated class names, for ONNX files without metadata.")(f)
    f = click.option("--std", default=None, help="Three comma-separated values, for ONNX files without metadata.")(f)
    f = click.option("--mean", default=None, help="Three comma-separated values, for ONNX files without metadata.")(f)
    f = click.option("--image-size", type=click.IntRange(16, 4096), default=None,
                     help="Input size, for ONNX files without skinonnx metadata.")(f)
    return f


def _contract_from_options(image_size: int | None, mean: str | None, std: str | None, classes: str | None):
    if image_size is None and mean is None and std is None:
        return None
    if image_size is None or mean is None or std is None:
        raise click.UsageError("--image-size, --mean and --std must be given together")
    from .contract import ModelContract
    from .preprocessing import Preprocessing

    def triple(text: str, name: str) -> tuple[float, float, float]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            raise click.BadParameter(f"expected three numbers, got '{text}'", param_hint=name) from None
        if len(values) != 3:
            raise click.BadParameter(f"expected three numbers, got '{text}'", param_hint=name)
        return values  # type: ignore[return-value]

    names = tuple(c.strip() for c in (classes or "benign,malignant").split(","))
    if len(names) != 2:
        raise click.BadParameter("expected two class names", param_hint="--classes")
    try:
        prep = Preprocessing.for_size(image_size, mean=triple(mean, "--mean"), std=triple(std, "--std"))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    pos = names.index("malignant") if "malignant" in names else 1
    return ModelContract(classes=names, positive_index=pos, preprocessing=prep)


def save_optimized_option(f):
    return click.option(
        "--save-optimized", type=click.Path(path_type=Path), default=None,
        help="Also write the graph ONNX Runtime optimised (fusions, constant folding, CPU layouts) to this "
             "path, e.g. to inspect it in Netron. It is tied to this machine kind and onnxruntime version.")(f)


def _open_classifier(onnx_path: Path, provider: str, contract_opts: tuple, save_optimized: Path | None = None):
    from .runtime import OnnxClassifier

    contract = _contract_from_options(*contract_opts)
    if save_optimized is None:
        classifier = OnnxClassifier(onnx_path, provider, contract=contract)
    else:
        from .atomic import atomic_path

        if save_optimized.resolve() == onnx_path.resolve():
            raise click.BadParameter("must differ from the model path", param_hint="--save-optimized")
        with atomic_path(save_optimized) as tmp:
            classifier = OnnxClassifier(onnx_path, provider, contract=contract, optimized_model_path=tmp)
        click.echo(f"optimised graph saved to {save_optimized}", err=True)
    click.echo(f"model {onnx_path} on ONNX Runtime {classifier.provider}", err=True)
    return classifier


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skinonnx")
def main() -> None:
    """Train a ResNet50 skin-lesion classifier (benign vs malignant), export it to ONNX, deploy it."""


_NEGATED_FLAGS = {"no_calibrate": "calibrate", "no_amp": "amp", "no_channels_last": "channels_last",
                  "quiet": "progress"}


def _explicit_train_settings() -> set[str]:
    """TrainConfig fields the user typed (or set through the environment) on this `train` call."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    typed = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    return {_NEGATED_FLAGS.get(name, name) for name in typed} - {"resume"}


@main.command()
@click.option("--data", default="data/synthetic", show_default=True,
              help="Data folder (split or flat ImageFolder) or index CSV (path,label,split).")
@click.option("--weights", default="imagenet", show_default=True,
              help="'imagenet' (torchvision), 'none' (random init) or a path to a ResNet50 state dict.")
@click.option("--epochs", type=POSITIVE_INT, default=15, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-4, show_default=True)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
@click.option("--scheduler", type=click.Choice(["plateau", "cosine"]), default="plateau", show_default=True)
@click.option("--early-stop", type=click.IntRange(min=0), default=6, show_default=True,
              help="Stop after this many epochs without improvement (0: never).")
@click.option("--image-size", type=click.IntRange(32, 1024), default=224, show_default=True)
@click.option("--select", type=click.Choice(["auc", "acc", "loss"]), default="auc", show_default=True,
              help="Validation metric that picks best.pt.")
@click.option("--threshold-policy", default="youden", show_default=True,
              help="Operating point chosen on validation: youden, sensitivity:0.95 or fixed:0.5.")
@click.option("--no-calibrate", is_flag=True, help="Skip temperature scaling.")
@click.option("--positive-class", default=None, help="Class counted as positive (default: malignant).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=None, help="DataLoader workers (default: auto).")
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on CUDA.")
@click.option("--no-channels-last", is_flag=True, help="Keep NCHW memory format.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=2048, show_default=True,
              help="Memory for decoded training images; the rest streams from disk.")
@max_pixels_option
@click.option("--name", default="", help="Run name under runs/ (default: a time stamp).")
@click.option("--checkpoint-dir", default="checkpoints", show_default=True)
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue from CHECKPOINT_DIR/last.pt with its saved settings; only --epochs, --early-stop, "
                   "--data, --device, --workers, --cache-mb, --max-pixels, --runs-dir and --quiet may be given.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def train(**opts: object) -> None:
    """Fine-tune ResNet50; keep best.pt by a validation metric and last.pt every epoch."""
    from .thresholds import parse_policy
    from .train import TrainConfig, fit

    try:
        parse_policy(str(opts["threshold_policy"]))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threshold-policy") from None
    resume = bool(opts.pop("resume"))
    quiet = bool(opts.pop("quiet"))
    cfg = TrainConfig(
        data=str(opts["data"]), name=str(opts["name"]), weights=str(opts["weights"]), epochs=int(opts["epochs"]),
        batch_size=int(opts["batch_size"]), lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"]),
        optimizer=str(opts["optimizer"]), scheduler=str(opts["scheduler"]), early_stop=int(opts["early_stop"]),
        image_size=int(opts["image_size"]), select=str(opts["select"]),
        threshold_policy=str(opts["threshold_policy"]), calibrate=not opts["no_calibrate"],
        positive_class=opts["positive_class"], seed=int(opts["seed"]), device=str(opts["device"]),  # type: ignore[arg-type]
        workers=opts["workers"], amp=not opts["no_amp"], channels_last=not opts["no_channels_last"],  # type: ignore[arg-type]
        cache_mb=int(opts["cache_mb"]), max_pixels=int(opts["max_pixels"]),
        checkpoint_dir=str(opts["checkpoint_dir"]), runs_dir=str(opts["runs_dir"]), progress=not quiet)
    try:
        result = fit(cfg, resume=resume, explicit=_explicit_train_settings(), echo=_echo)
    except KeyboardInterrupt:
        raise SkinOnnxError(f"interrupted; the last completed epoch is in {cfg.checkpoint_dir}/last.pt "
                            "(continue with --resume)") from None
    click.echo(f"best {result.best_path} (epoch {result.best_epoch}, {cfg.select} {result.best_metric:.4f}); "
               f"metrics in {result.run_dir / 'metrics.csv'}")


@main.command()
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
@provider_option("cpu")
def export(checkpoint: Path, output: Path, opset: int, data: str | None, atol: float, parity_images: int,
           int8: bool, embed_preprocessing: bool, provider: str) -> None:
    """Export a checkpoint to a self-describing ONNX file (checked, parity-tested, atomic)."""
    from .export import export as run_export

    result = run_export(checkpoint, output, opset=opset, data=data, atol=atol, parity_images=parity_images,
                        provider=provider, embed_preprocessing=embed_preprocessing, echo=_echo)
    c = result.contract
    click.echo(f"wrote {result.path} ({result.path.stat().st_size / 1e6:.1f} MB): classes {list(c.classes)}, "
               f"threshold {c.threshold:.4f} ({c.threshold_policy}), temperature {c.temperature:.3f}")
    if result.uint8_path is not None:
        click.echo(f"wrote {result.uint8_path} (input 'image': uint8 [N, H, W, 3] RGB, shorter side resized to "
                   f"{c.preprocessing.resize_size}; see docs/EMBEDDING.md)")
    if int8:
        from .checkpoint import load_checkpoint

        root = data or load_checkpoint(checkpoint).get("data_root")
        if not root or not Path(root).exists():
            raise SkinOnnxError(f"{result.path} written; --int8 needs the training data: pass --data DIR")
        _run_quantize(result.path, None, str(root), {})


def _run_quantize(onnx_path: Path, output: Path | None, data: str, options: dict) -> None:
    from .quantize import QuantizeSettings, quantize_model

    q = quantize_model(onnx_path, output, data, QuantizeSettings(**options), echo=_echo)
    size = q.path.stat().st_size / 1e6
    click.echo(f"wrote {q.path} ({size:.1f} MB, INT8 QDQ, calibrated on {q.calibration_images} images) in "
               f"{q.seconds:.0f} s")


@main.command()
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


@main.command()
@click.option("--checkpoint", type=click.Path(path_type=Path), default=Path("checkpoints/best.pt"), show_default=True)
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--data", default=None, help="Real images for the check (default: the checkpoint's data).")
@click.option("--atol", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True)
@click.option("--images", "n_images", type=click.IntRange(min=1), default=32, show_default=True)
@provider_option("cpu")
def parity(checkpoint: Path, onnx_path: Path, data: str | None, atol: float, n_images: int, provider: str) -> None:
    """Compare an ONNX file with its checkpoint on real images; exit 1 above tolerance."""
    from .checkpoint import load_checkpoint, model_from_checkpoint
    from .export import parity_images_for
    from .parity import check_parity

    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    batch, source = parity_images_for(state, data, n_images)
    click.echo(f"parity images: {source}")
    temperature = float((state.get("calibration") or {}).get("temperature", 1.0))
    report = check_parity(model, onnx_path, batch, temperature=temperature, atol=atol, provider=provider)
    click.echo(report.text())
    from .provenance import write_parity_record

    record = write_parity_record(onnx_path, report.to_dict(), source=source)
    click.echo(f"parity ok (recorded in {record})")


@main.command("test")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--data", default=None,
              help="Data set to evaluate (default: the training data recorded in the model's metadata).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Override the decision threshold stored in the model.")
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Report folder (default: reports/<model name>).")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(min=10), default=1000, show_default=True,
              help="Stratified bootstrap resamples for the confidence intervals.")
@click.option("--ci-seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling.")
@click.option("--confidence", type=click.FloatRange(0.5, 1, max_open=True), default=0.95, show_default=True,
              help="Confidence level of the intervals.")
@click.option("--no-ci", is_flag=True, help="Point estimates only (no bootstrap).")
@click.option("--json", "as_json", is_flag=True,
              help="Print summary.json to stdout instead of the table (schema: docs/REPORTS.md).")
@click.option("--run-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="Training run folder (config.json, metrics.csv) for the training curves and model card "
                   "(default: the one recorded in the ONNX metadata, if it exists).")
@click.option("--skip-val", is_flag=True,
              help="Don't also run the validation split (used for its calibration before/after and its figures "
                   "at the operating point).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
@provider_option()
@save_optimized_option
@max_pixels_option
@contract_options
@click.option("--quiet", is_flag=True)
def test_cmd(onnx_path: Path, data: str | None, split: str, threshold: float | None, batch_size: int,
             out_dir: Path | None, n_bootstrap: int, ci_seed: int, confidence: float, no_ci: bool, as_json: bool,
             run_dir: Path | None, skip_val: bool, no_plots: bool, provider: str, save_optimized: Path | None,
             max_pixels: int, image_size: int | None, mean: str | None, std: str | None, classes: str | None,
             quiet: bool) -> None:
    """Evaluate a split through ONNX Runtime: metrics with CIs, calibration, plots, model card (docs/REPORTS.md)."""
    from .atomic import ensure_writable_dir
    from .evaluation import evaluate_split, format_metrics, summary_json

    out = out_dir or Path("reports") / onnx_path.stem
    ensure_writable_dir(out)
    classifier = _open_classifier(onnx_path, provider, (image_size, mean, std, classes), save_optimized)
    data = data or classifier.metadata.get("training_data")
    if not data or not Path(data).exists():
        raise click.UsageError("pass --data DIR: the model's metadata names no training data that exists here"
                               + (f" ({data})" if data else ""))
    result = evaluate_split(classifier, data, split=split, threshold=threshold, batch_size=batch_size,
                            out_dir=out, progress=not quiet, max_pixels=max_pixels,
                            bootstrap=0 if no_ci else n_bootstrap, ci_seed=ci_seed, confidence=confidence,
                            use_val=not skip_val, run_dir=run_dir, plots=not no_plots)
    if as_json:
        click.echo(summary_json(result.summary), nl=False)
    else:
        click.echo(format_metrics(result))
        click.echo(result.report_text)
    for path, problem in result.skipped:
        click.echo(f"skipped {path}: {problem}", err=True)
    click.echo(f"report in {out}/: {', '.join(result.files)}", err=as_json)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("reports/predictions.csv"),
              show_default=True, help="Results file, .csv or .json.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@provider_option()
@save_optimized_option
@max_pixels_option
@contract_options
@click.option("--quiet", is_flag=True)
def predict(inputs: tuple[str, ...], onnx_path: Path, output: Path, threshold: float | None, batch_size: int,
            provider: str, save_optimized: Path | None, max_pixels: int, image_size: int | None, mean: str | None,
            std: str | None, classes: str | None, quiet: bool) -> None:
    """Classify image files, folders or globs; unreadable files are reported and skipped."""
    from .atomic import ensure_writable_dir
    from .predict import collect_inputs, run_predict, write_outputs

    if output.suffix.lower() not in (".csv", ".json"):
        raise click.BadParameter(f"must end in .csv or .json: {output}", param_hint="--output")
    paths, problems = collect_inputs(inputs)
    if not paths:
        raise SkinOnnxError("no images found in " + ", ".join(inputs))
    ensure_writable_dir(output.parent)
    classifier = _open_classifier(onnx_path, provider, (image_size, mean, std, classes), save_optimized)
    result = run_predict(classifier, paths, threshold=threshold, batch_size=batch_size, progress=not quiet,
                         max_pixels=max_pixels)
    result.skipped = problems + result.skipped
    write_outputs(result, output, provider=classifier.provider, model=onnx_path)
    pos = classifier.contract.positive_class
    n_pos = sum(r["prediction"] == pos for r in result.rows)
    click.echo(f"{len(result.rows)} images classified ({n_pos} {pos}), {len(result.skipped)} skipped -> {output}")
    for bad in result.skipped[:20]:
        click.echo(f"skipped {bad['path']}: {bad['problem']}", err=True)
    if len(result.skipped) > 20:
        click.echo(f"... {len(result.skipped) - 20} more skipped; see {output}", err=True)
    if not result.rows:
        raise SkinOnnxError(f"none of the {len(result.skipped)} inputs could be classified (reasons in {output})")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
def info(model: Path, as_json: bool) -> None:
    """Show an ONNX file's contract: metadata, opset, inputs/outputs, size, sha256; validate its schema.

    Exits 1 when the file is not a skinonnx model or its metadata does not validate.
    """
    import json

    from .model_info import inspect_model, schema_error

    details = inspect_model(model)
    click.echo(json.dumps(details.to_dict(), indent=2) if as_json else details.text())
    problem = schema_error(details)
    if problem is not None:
        raise problem


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=Path("checkpoints/best.pt"), show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("reports/gradcam"), show_default=True,
              help="Folder for the overlay PNGs and explanations.csv.")
@click.option("--class", "target_class", default=None, help="Class to explain (default: the positive class).")
@click.option("--masks", type=click.Path(path_type=Path), default=None,
              help="Folder of lesion masks (X.png or X_segmentation.png for image X): also play the pointing game.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Pointing game: a peak this many model-input pixels from the lesion still counts as a hit.")
@click.option("--batch-size", type=POSITIVE_INT, default=8, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@max_pixels_option
@click.option("--quiet", is_flag=True)
def explain(inputs: tuple[str, ...], checkpoint: Path, out_dir: Path, target_class: str | None, masks: Path | None,
            tolerance: float, batch_size: int, device: str, max_pixels: int, quiet: bool) -> None:
    """Grad-CAM heatmap overlays (PNG) from the last convolutional block, at the model's preprocessing."""
    from .explain import explain_files
    from .predict import collect_inputs

    paths, problems = collect_inputs(inputs)
    if not paths:
        raise SkinOnnxError("no images found in " + ", ".join(inputs))
    result = explain_files(checkpoint, paths, out_dir, target_class=target_class, batch_size=batch_size,
                           device=device, masks=masks, tolerance=tolerance, max_pixels=max_pixels,
                           progress=not quiet)
    for path, problem in [(p["path"], p["problem"]) for p in problems] + result.skipped:
        click.echo(f"skipped {path}: {problem}", err=True)
    if not result.explanations:
        raise SkinOnnxError("no image could be explained")
    target = result.explanations[0].target
    click.echo(f"{len(result.explanations)} Grad-CAM overlays for '{target}' in {out_dir}/ "
               f"(summary: {result.csv_path})")
    if result.pointing is not None:
        click.echo(result.pointing.text())
    elif masks is not None:
        click.echo(f"no image had a mask in {masks}", err=True)


@main.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("data/synthetic"), show_default=True)
@click.option("--epochs", type=POSITIVE_INT, default=8, show_default=True)
@click.option("--image-size", type=click.IntRange(32, 1024), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True)
def demo(data_dir: Path, epochs: int, image_size: int, seed: int, quiet: bool) -> None:
    """Offline end-to-end run on a generated synthetic data set: train, export, test, predict."""
    from .demo import run_demo

    run_demo(data_dir, epochs=epochs, image_size=image_size, seed=seed, progress=not quiet, echo=_echo)


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("data/synthetic"), show_default=True)
@click.option("--train", "n_train", type=POSITIVE_INT, default=96, show_default=True, help="Training images per class.")
@click.option("--val", "n_val", type=POSITIVE_INT, default=24, show_default=True, help="Validation images per class.")
@click.option("--test", "n_test", type=POSITIVE_INT, default=30, show_default=True, help="Test images per class.")
@click.option("--size", type=click.IntRange(32, 1024), default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--quiet", is_flag=True)
def synthetic(out_dir: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, quiet: bool) -> None:
    """Generate synthetic ABCD-rule lesions (split ImageFolder + masks).

    Besides the demo, a larger set is an offline pretraining source when ImageNet weights cannot be
    downloaded: train on it, then fine-tune on real data with --weights its best.pt (see README).
    """
    from .atomic import ensure_writable_dir
    from .synthetic import generate_dataset

    ensure_writable_dir(out_dir)
    summary = generate_dataset(out_dir, counts={"train": n_train, "val": n_val, "test": n_test}, size=size,
                               seed=seed, progress=not quiet)
    click.echo(f"synthetic data set in {out_dir}: {summary['counts']} ({size} px, seed {seed})")


if __name__ == "__main__":  # pragma: no cover
    main()
