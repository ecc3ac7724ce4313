"""`test`, `predict` and `info`: ONNX Runtime only, no torch."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SkinOnnxError
from .options import (
    POSITIVE_INT,
    contract_options,
    max_pixels_option,
    open_classifier,
    provider_option,
    save_optimized_option,
    threads_option,
)


@click.command("test")
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
@threads_option
@save_optimized_option
@max_pixels_option
@contract_options
@click.option("--quiet", is_flag=True)
def test_cmd(onnx_path: Path, data: str | None, split: str, threshold: float | None, batch_size: int,
             out_dir: Path | None, n_bootstrap: int, ci_seed: int, confidence: float, no_ci: bool, as_json: bool,
             run_dir: Path | None, skip_val: bool, no_plots: bool, provider: str, threads: int | None,
             save_optimized: Path | None, max_pixels: int, image_size: int | None, mean: str | None,
             std: str | None, classes: str | None, quiet: bool) -> None:
    """Evaluate a split through ONNX Runtime: metrics with CIs, calibration, plots, model card (docs/REPORTS.md)."""
    from ..atomic import ensure_writable_dir
    from ..evaluation.report import evaluate_split, format_metrics, summary_json

    out = out_dir or Path("reports") / onnx_path.stem
    ensure_writable_dir(out)
    classifier = open_classifier(onnx_path, provider, (image_size, mean, std, classes), save_optimized, threads)
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


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=Path("exports/model.onnx"),
              show_default=True)
@click.option("--output", "-o", type=click.Path(path_type=Path), default=Path("reports/predictions.csv"),
              show_default=True, help="Results file, .csv or .json.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@provider_option()
@threads_option
@save_optimized_option
@max_pixels_option
@contract_options
@click.option("--quiet", is_flag=True)
def predict(inputs: tuple[str, ...], onnx_path: Path, output: Path, threshold: float | None, batch_size: int,
            provider: str, threads: int | None, save_optimized: Path | None, max_pixels: int,
            image_size: int | None, mean: str | None,
            std: str | None, classes: str | None, quiet: bool) -> None:
    """Classify image files, folders or globs; unreadable files are reported and skipped."""
    from ..atomic import ensure_writable_dir
    from ..deploy.predict import collect_inputs, run_predict, write_outputs

    if output.suffix.lower() not in (".csv", ".json"):
        raise click.BadParameter(f"must end in .csv or .json: {output}", param_hint="--output")
    paths, problems = collect_inputs(inputs)
    if not paths:
        raise SkinOnnxError("no images found in " + ", ".join(inputs))
    ensure_writable_dir(output.parent)
    classifier = open_classifier(onnx_path, provider, (image_size, mean, std, classes), save_optimized, threads)
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


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
def info(model: Path, as_json: bool) -> None:
    """Show an ONNX file's contract: metadata, opset, inputs/outputs, size, sha256; validate its schema.

    Exits 1 when the file is not a skinonnx model or its metadata does not validate.
    """
    import json

    from ..deploy.info import inspect_model, schema_error

    details = inspect_model(model)
    click.echo(json.dumps(details.to_dict(), indent=2) if as_json else details.text())
    problem = schema_error(details)
    if problem is not None:
        raise problem
