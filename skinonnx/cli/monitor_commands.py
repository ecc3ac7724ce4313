"""`monitor`: compare what the model sees now with what it saw at test time (ONNX Runtime only, no torch)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    POSITIVE_INT,
    exit_codes_epilog,
    exit_zero_option,
    gate_exit,
    max_pixels_option,
    onnx_option,
    open_classifier,
    provider_option,
    report_folder,
    threads_option,
)


@click.command("monitor", epilog=exit_codes_epilog("drift detected (p < --alpha)"))
@onnx_option()
@click.option("--reference", "reference_dir", required=True,
              type=click.Path(path_type=Path, exists=True, file_okay=False),
              help="A report folder written by `test` with this model (its predictions.csv, "
                   "image_statistics.csv and summary.json are the reference).")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--method", type=click.Choice(["ks", "mmd"]), default="ks", show_default=True,
              help="ks: a Kolmogorov-Smirnov test per quantity, Holm-corrected (says what moved); mmd: one "
                   "kernel two-sample permutation test on all quantities together (docs/SAFETY.md).")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.05,
              show_default=True, help="False-alarm rate of the verdict for a batch from the reference's distribution.")
@click.option("--output", "-o", "out_dir", type=click.Path(path_type=Path), default=report_folder("monitor"),
              show_default=True, help="Folder for monitor.json and drift.png.")
@click.option("--no-plot", is_flag=True, help="Skip drift.png.")
@click.option("--json", "as_json", is_flag=True, help="Print monitor.json to stdout instead of the text verdict.")
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@provider_option()
@threads_option
@max_pixels_option
@click.option("--quiet", is_flag=True)
@exit_zero_option
def monitor(onnx_path: Path, reference_dir: Path, inputs: tuple[str, ...], method: str, alpha: float, out_dir: Path,
            no_plot: bool, as_json: bool, batch_size: int, provider: str, threads: int | None, max_pixels: int,
            quiet: bool, exit_zero: bool) -> None:
    """Does a new batch of images (files, folders, globs, manifests) differ from the test images? Verdict + p-value."""
    from ..atomic import ensure_writable_dir
    from ..data.inputs import collect_inputs
    from ..errors import SkinOnnxError
    from ..monitoring.monitor import format_verdict, run_monitor
    from ..reporting.provenance import dumps_strict

    paths, problems = collect_inputs(inputs)
    if not paths:
        raise SkinOnnxError("no images found in " + ", ".join(inputs))
    ensure_writable_dir(out_dir)
    classifier = open_classifier(onnx_path, provider, (None, None, None, None), threads=threads)
    verdict = run_monitor(classifier, reference_dir, paths, out_dir=out_dir, method=method, alpha=alpha,
                          batch_size=batch_size, max_pixels=max_pixels, progress=not quiet and not as_json,
                          plot=not no_plot, input_problems=problems)
    if as_json:
        click.echo(dumps_strict(verdict), nl=False)
    else:
        click.echo(format_verdict(verdict))
    for row in verdict["skipped"]:
        click.echo(f"skipped {row['path']}: {row['problem']}", err=True)
    click.echo(f"verdict in {out_dir}/: {', '.join(verdict['files'])}", err=True)
    gate_exit([f"drift (p = {verdict['p_value']:.3g} < alpha {verdict['alpha']})"] if verdict["drift"] else [],
              exit_zero)
