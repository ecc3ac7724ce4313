"""`compare`: several ONNX models on one split, one table (ONNX Runtime only, no torch)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    POSITIVE_INT,
    confidence_interval_options,
    max_pixels_option,
    open_classifier,
    provider_option,
    report_folder,
    require_onnx,
    threads_option,
)


def _data_for(models: tuple[Path, ...], data: str | None) -> str:
    """--data, else the training data every model records (they must agree: one split for all)."""
    from ..data.training_data import model_data
    from ..deploy.info import read_header

    if data is not None:
        return model_data(data, None, needed_for="`compare`")
    recorded = {read_header(m).metadata.get("training_data") for m in models}
    if len(recorded) > 1:
        raise click.UsageError("the models record different training data ("
                               + ", ".join(sorted(str(r) for r in recorded)) + "); pass --data DIR to compare them "
                               "on one data set")
    return model_data(None, recorded.pop(), needed_for="`compare`")


@click.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data", default=None,
              help="Data set to evaluate on (default: the training data the models' metadata records).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True,
              help="Split every model is evaluated on.")
@click.option("--output", "-o", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder for compare.json and compare.md (default: reports/compare-<hash of the models>).")
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True,
              help="Batch size for the evaluation and for the speed measurement.")
@confidence_interval_options
@click.option("--speed-seconds", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Timed inference per model for images/s (0: three runs of one batch).")
@max_pixels_option
@threads_option
@provider_option()
@click.option("--quiet", is_flag=True, help="No progress bars.")
def compare(models: tuple[Path, ...], data: str | None, split: str, out_dir: Path | None, batch_size: int,
            n_bootstrap: int, ci_seed: int, confidence: float, no_ci: bool, speed_seconds: float, max_pixels: int,
            threads: int | None, provider: str, quiet: bool) -> None:
    """Compare ONNX models (e.g. a single run and a fold ensemble) on one split: AUC with CI, the estimate each was
    chosen on (out-of-fold or validation), file size and images/s here; one table, compare.json and compare.md."""
    from ..atomic import ensure_writable_dir
    from ..data.layouts import existing_data

    if len(models) < 2:
        raise click.UsageError("give at least two models to compare (`test` reports on one)")
    if len({m.resolve() for m in models}) < len(models):
        raise click.UsageError("a model is named twice")
    for m in models:
        require_onnx(m)
    root = str(existing_data(_data_for(models, data)))  # before ONNX Runtime and SciPy load
    out = out_dir or _default_dir(models)
    ensure_writable_dir(out)
    from ..reporting.compare import compare_models, text_table, write_comparison

    classifiers = [open_classifier(m, provider, (None, None, None, None), None, threads) for m in models]
    doc = compare_models(classifiers, root, split=split, batch_size=batch_size, bootstrap=0 if no_ci else n_bootstrap,
                         ci_seed=ci_seed, confidence=confidence, max_pixels=max_pixels, progress=not quiet,
                         speed_seconds=speed_seconds, echo=lambda msg: click.echo(msg, err=True))
    written = write_comparison(doc, out)
    click.echo(text_table(doc))
    click.echo(f"comparison in {out}/: {', '.join(p.name for p in written)}", err=True)


def _default_dir(models: tuple[Path, ...]) -> Path:
    """reports/compare-<8 hex>: one folder per set of model files (by content), whatever their order."""
    import hashlib

    from ..hashing import file_sha256

    key = hashlib.sha256("".join(sorted(file_sha256(m) for m in models)).encode()).hexdigest()
    return report_folder("compare", key)
