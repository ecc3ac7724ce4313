"""`test`, `predict` and `info`: ONNX Runtime only, no torch."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from ..errors import SkinOnnxError
from .options import (
    POSITIVE_INT,
    confidence_interval_options,
    data_from_metadata,
    onnx_option,
    onnx_runtime_options,
    open_classifier,
    program_name,
    renamed_option,
    report_folder,
    require_onnx,
    runs_dir_option,
)


@click.command("test")
@onnx_option()
@click.option("--data", default=None,
              help="Data set to evaluate (default: the training data recorded in the model's metadata).")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Override the decision threshold stored in the model.")
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--output", "-o", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Report folder (default: reports/<model name>-<first 8 hex of its sha256>).")
@renamed_option("--out", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace a report of another model in --output.")
@confidence_interval_options
@click.option("--json", "as_json", is_flag=True,
              help="Print summary.json to stdout instead of the table (schema: docs/REPORTS.md).")
@click.option("--run-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), help="Training run folder "
              "(config.json, metrics.csv) for the curves and model card (default: the one the ONNX metadata names).")
@runs_dir_option
@click.option("--skip-val", is_flag=True, help="Don't also run the validation split (used for its calibration "
              "before/after and its figures at the operating point).")
@click.option("--no-plots", is_flag=True, help="Skip the PNG figures.")
@click.option("--no-html", is_flag=True, help="Skip report.html and its case images (report_files/).")
@click.option("--by", multiple=True, metavar="COLUMN[,COLUMN]",
              help="Also report every metric per group of this column (repeatable): an extra column of the index "
                   "CSV or of --attributes, or 'ita' (estimated skin tone). docs/SAFETY.md")
@click.option("--attributes", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="CSV with a 'path' column (relative to its folder) and attribute columns for --by.")
@click.option("--exclude-list", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also leave out the images listed in FILE (one path per line, relative to the data root; `audit` "
                   "writes one). The images the model's training run excluded are always left out.")
@onnx_runtime_options
def test_cmd(onnx_path: Path, data: str | None, split: str, threshold: float | None, batch_size: int,
             out_dir: Path | None, overwrite: bool, n_bootstrap: int, ci_seed: int, confidence: float, no_ci: bool,
             as_json: bool, run_dir: Path | None, runs_dir: Path, skip_val: bool, no_plots: bool, no_html: bool,
             by: tuple[str, ...], attributes: Path | None, exclude_list: Path | None, provider: str,
             threads: int | None, save_optimized: Path | None, max_pixels: int,
             image_size: int | None, mean: str | None, std: str | None, classes: str | None, quiet: bool) -> None:
    """Evaluate a split through ONNX Runtime: metrics with CIs, calibration, plots, model card (docs/REPORTS.md)."""
    from ..atomic import ensure_writable_dir
    from ..data.layouts import existing_data
    from ..deploy.info import read_header

    if attributes is not None and not by:
        raise click.UsageError("--attributes is read only for --by COLUMN; name the column(s) to report")
    require_onnx(onnx_path)
    header = read_header(onnx_path).metadata
    data = str(existing_data(data_from_metadata(data, header)))  # before ORT and SciPy
    out = _report_dir(onnx_path, out_dir, overwrite)
    created = not out.exists()
    try:
        from ..reporting.report import evaluate_split
        from ..reporting.safety import parse_by

        ensure_writable_dir(out)
        classifier = open_classifier(onnx_path, provider, (image_size, mean, std, classes), save_optimized, threads)
        _say_which_run(classifier.metadata, runs_dir)
        result = evaluate_split(classifier, data, split=split, threshold=threshold, batch_size=batch_size,
                                out_dir=out, progress=not quiet, max_pixels=max_pixels,
                                bootstrap=0 if no_ci else n_bootstrap, ci_seed=ci_seed, confidence=confidence,
                                use_val=not skip_val, run_dir=run_dir, runs_dir=runs_dir, plots=not no_plots,
                                html=not no_html, echo=lambda msg: click.echo(msg, err=True), by=parse_by(by),
                                attributes=attributes, exclude_list=exclude_list)
    except BaseException:
        if created:  # a failed test leaves no half-written report folder behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    from ..reporting.provenance import dumps_strict
    from ..reporting.terminal import format_metrics

    click.echo(dumps_strict(result.summary) if as_json else f"{format_metrics(result)}\n{result.report_text}",
               nl=not as_json)
    for path, problem in result.skipped:
        click.echo(f"skipped {path}: {problem}", err=True)
    click.echo(f"report in {out}/: {', '.join(result.files)}", err=as_json)
    _track_test(onnx_path, classifier.metadata, result.summary, out)


def _track_test(onnx_path: Path, metadata: dict[str, str], summary: dict, out: Path) -> None:
    """A model from a tracked run: its metrics and report go to that MLflow run (found by the model's hash)."""
    from ..tracking.run_record import read_record

    if read_record(metadata.get("training_run_dir") or "") is not None:  # MLflow only for a tracked run
        from ..tracking.registry import log_test_results

        log_test_results(onnx_path, metadata, summary, out, echo=lambda msg: click.echo(msg, err=True))


def _report_dir(onnx_path: Path, given: Path | None, overwrite: bool) -> Path:
    """--output, else reports/<stem>-<sha256[:8]>: two models never share a default folder, and a folder holding
    another model's report is not replaced without --overwrite."""
    import json

    from ..hashing import file_sha256

    sha = file_sha256(onnx_path)
    out = given or report_folder(onnx_path.stem, sha)
    try:
        before = json.loads((out / "summary.json").read_text(encoding="utf-8"))["model"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        before = sha
    if before != sha and not overwrite:
        raise click.UsageError(f"{out} holds the report of another model (sha256 {str(before)[:12]}...); pass "
                               "another --output or --overwrite")
    return out


def _say_which_run(metadata: dict[str, str], runs_dir: Path) -> None:
    """Name the run the model was exported from, and the run `export` would take now if that is another one."""
    source = metadata.get("training_run_dir")
    if not source:
        return
    click.echo(f"model from run {source}", err=True)
    from ..training.runs import default_model_run

    newest = default_model_run(runs_dir)
    if newest is not None and newest.resolve() != Path(source).resolve():
        click.echo(f"note: the newest run is {newest}; `{program_name()} export` exports it", err=True)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@onnx_option()
@click.option("--output", "-o", type=click.Path(path_type=Path), default=report_folder("predictions.csv"),
              show_default=True, help="Results file, .csv, .json or .parquet (Parquet needs pyarrow).")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: one ONNX Runtime session in this process; ray: Ray Data, one session per worker "
                   "(pip install 'skinonnx[scale]').")
@click.option("--address", default=None, help="--engine ray: a Ray cluster to join (default: start a local one).")
@click.option("--ray-workers", "workers", type=POSITIVE_INT, default=None,
              help="--engine ray: worker actors (default: one per CPU, or per --gpus-per-worker GPUs).")
@renamed_option("--workers", "--ray-workers", "workers", type=POSITIVE_INT)
@click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="--engine ray: GPUs per worker (e.g. 1, or 0.5 to share one); 0: CPU workers.")
@click.option("--shard", default=None, metavar="I/N",
              help="Predict only shard I of N (0 <= I < N, split by a hash of the path), e.g. for a scheduler "
                   "array: each task writes its own --output.")
@click.option("--part-size", type=POSITIVE_INT, default=1000, show_default=True,
              help="Images per part file in OUTPUT.parts/ (what a rerun after a crash keeps).")
@click.option("--cam-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Also write <image>.cam.png heatmaps of the model's own 'cam' output into this folder "
                   "(no torch; local engine).")
@renamed_option("--cam", "--cam-dir", "cam_dir", type=click.Path(path_type=Path, file_okay=False))
@onnx_runtime_options
def predict(inputs: tuple[str, ...], onnx_path: Path, output: Path, threshold: float | None, batch_size: int,
            engine: str, address: str | None, workers: int | None, gpus_per_worker: float, shard: str | None,
            part_size: int, cam_dir: Path | None, provider: str, threads: int | None, save_optimized: Path | None,
            max_pixels: int, image_size: int | None, mean: str | None, std: str | None, classes: str | None,
            quiet: bool) -> None:
    """Classify image files, folders, globs or manifests (.csv/.parquet with a 'path' column); unreadable
    files are reported and skipped. An interrupted job run again with the same --output continues."""
    from ..atomic import ensure_writable_dir
    from ..data.inputs import collect_inputs
    from ..deploy.contract import OOD_REFUSAL
    from ..deploy.predict import parse_shard, run_job, select_shard, write_outputs

    if output.suffix.lower() not in (".csv", ".json", ".parquet"):
        raise click.BadParameter(f"must end in .csv, .json or .parquet: {output}", param_hint="--output")
    if engine != "ray" and (address or workers or gpus_per_worker):
        raise click.UsageError("--address, --ray-workers and --gpus-per-worker need --engine ray")
    if engine == "ray" and cam_dir is not None:
        raise click.UsageError("--cam-dir runs on the local engine only (drop --engine ray)")
    try:
        shard_spec = parse_shard(shard) if shard else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--shard") from None
    paths, problems = collect_inputs(inputs)
    paths = select_shard(paths, shard_spec)
    if shard_spec:
        click.echo(f"shard {shard}: {len(paths)} images", err=True)
    ensure_writable_dir(output.parent)
    if cam_dir is not None:
        ensure_writable_dir(cam_dir)
    classifier = open_classifier(onnx_path, provider, (image_size, mean, std, classes), save_optimized, threads)
    ray_options = None if engine != "ray" else {"address": address, "workers": workers,
                                                 "gpus_per_worker": gpus_per_worker, "provider": provider,
                                                 "threads": threads}
    result, journal = run_job(classifier, paths, output, threshold=threshold, batch_size=batch_size,
                              max_pixels=max_pixels, progress=not quiet, part_rows=part_size,
                              ray_options=ray_options, cam_dir=cam_dir, echo=lambda msg: click.echo(msg, err=True))
    result.skipped = problems + result.skipped
    write_outputs(result, output, provider=classifier.provider, model=onnx_path)
    journal.remove()
    pos = classifier.contract.positive_class
    n_pos = sum(r["prediction"] == pos for r in result.rows)
    if classifier.contract.multiclass:  # the malignancy decision (the diagnosis is in the 'label' column)
        pos = "malignant (" + " + ".join(classifier.contract.malignant_classes) + ")"
        n_pos = sum(r["prediction"] != OOD_REFUSAL and bool(r.get("malignant")) for r in result.rows)
    n_out = sum(r["prediction"] == OOD_REFUSAL for r in result.rows)
    refused = f", {n_out} {OOD_REFUSAL}" if classifier.has_ood else ""
    click.echo(f"{len(result.rows) - n_out} images classified ({n_pos} {pos}){refused}, {len(result.skipped)} "
               f"skipped -> {output}"
               + (f"; heatmaps in {cam_dir}/" if cam_dir is not None else ""))
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


@click.command()
@onnx_option(help="The model the page loads (float or uint8 variant).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
def web(onnx_path: Path, port: int) -> None:
    """Serve the browser example and the model on 127.0.0.1 (images are classified in the browser, never uploaded)."""
    from ..deploy.web_server import make_server

    server = make_server(onnx_path, port)
    click.echo(f"serving {onnx_path} and examples/web/ at {server.url} (127.0.0.1 only; Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
