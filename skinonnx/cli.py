"""Command line: a click group; heavy imports (torch) happen inside the commands that need them.

`test`, `predict` and `info`-like paths import no torch, so a deploy machine needs only
onnxruntime, numpy and Pillow.
"""

from __future__ import annotations

import sys
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


def _open_classifier(onnx_path: Path, provider: str, contract_opts: tuple):
    from .runtime import OnnxClassifier

    classifier = OnnxClassifier(onnx_path, provider, contract=_contract_from_options(*contract_opts))
    click.echo(f"model {onnx_path} on ONNX Runtime {classifier.provider}", err=True)
    return classifier


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skinonnx")
def main() -> None:
    """Train a ResNet50 skin-lesion classifier (benign vs malignant), export it to ONNX, deploy it."""


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
@click.option("--resume", is_flag=True, help="Continue from CHECKPOINT_DIR/last.pt with its saved settings.")
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
        result = fit(cfg, resume=resume, echo=_echo)
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
@click.option("--embed-preprocessing", is_flag=True,
              help="Also write OUTPUT's stem + .uint8.onnx: input uint8 RGB NHWC (decoded, resized), crop and "
                   "normalisation in the graph; parity-checked against the float model (atol 1e-5).")
@provider_option("cpu")
def export(checkpoint: Path, output: Path, opset: int, data: str | None, atol: float, parity_images: int,
           embed_preprocessing: bool, provider: str) -> None:
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
    click.echo("parity ok")


@main.command("test")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--data", default="data/synthetic", show_default=True)
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Override the decision threshold stored in the model.")
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Report folder (default: reports/<model name>).")
@provider_option()
@contract_options
@click.option("--quiet", is_flag=True)
def test_cmd(onnx_path: Path, data: str, split: str, threshold: float | None, batch_size: int,
             out_dir: Path | None, provider: str, image_size: int | None, mean: str | None, std: str | None,
             classes: str | None, quiet: bool) -> None:
    """Evaluate a split through ONNX Runtime: metrics, confusion matrix, per-image CSV."""
    from .evaluation import evaluate_split, format_metrics

    classifier = _open_classifier(onnx_path, provider, (image_size, mean, std, classes))
    out = out_dir or Path("reports") / onnx_path.stem
    result = evaluate_split(classifier, data, split=split, threshold=threshold, batch_size=batch_size,
                            out_dir=out, progress=not quiet)
    click.echo(format_metrics(result))
    click.echo(result.report_text)
    for path, problem in result.skipped:
        click.echo(f"skipped {path}: {problem}", err=True)
    click.echo(f"reports in {out}/ (predictions.csv, summary.json)")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("reports/predictions.csv"),
              show_default=True, help="Results file, .csv or .json.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@provider_option()
@max_pixels_option
@contract_options
@click.option("--quiet", is_flag=True)
def predict(inputs: tuple[str, ...], onnx_path: Path, output: Path, threshold: float | None, batch_size: int,
            provider: str, max_pixels: int, image_size: int | None, mean: str | None, std: str | None,
            classes: str | None, quiet: bool) -> None:
    """Classify image files, folders or globs; unreadable files are reported and skipped."""
    from .predict import collect_inputs, run_predict, write_outputs

    paths, problems = collect_inputs(inputs)
    if not paths:
        raise SkinOnnxError("no images found in " + ", ".join(inputs))
    classifier = _open_classifier(onnx_path, provider, (image_size, mean, std, classes))
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
        sys.exit(1)


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


if __name__ == "__main__":  # pragma: no cover
    main()
