"""`serve`: the model as an Open Inference Protocol (v2) service; ONNX Runtime only, no torch."""

from __future__ import annotations

from pathlib import Path

import click

from .options import (
    POSITIVE_INT,
    max_pixels_option,
    onnx_option,
    provider_option,
    require_extra,
    require_onnx,
    threads_option,
)


@click.command()
@onnx_option(help="The model to serve.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; 0.0.0.0 exposes the service to the network (use --token-file then).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="0: any free port.")
@click.option("--model-name", default=None, help="Name in the v2 URLs (default: the ONNX file's stem).")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local", show_default=True,
              help="local: uvicorn + this process's dynamic batcher; ray: a Ray Serve deployment (replicas, Ray "
                   "Serve's batching).")
@click.option("--address", default=None, help="--engine ray: the Ray cluster to join (default: a local Ray on "
                                              "127.0.0.1).")
@click.option("--replicas", type=POSITIVE_INT, default=None, help="--engine ray: model replicas [default: 1].")
@click.option("--max-batch", type=POSITIVE_INT, default=None,
              help="Rows per ONNX Runtime call; 1 turns dynamic batching off [default: 16, docs/SERVE.md].")
@click.option("--max-wait-ms", type=click.FloatRange(0, 5000), default=None,
              help="How long a request waits for others to batch with; 0: only those already queued [default: 0].")
@click.option("--max-queue", type=POSITIVE_INT, default=None,
              help="Requests waiting for the model before new ones get 503 + Retry-After [default: 256].")
@click.option("--max-body-mb", type=click.FloatRange(0.001, 1024), default=None,
              help="Largest request body; bigger ones get 413 before they are read [default: 20].")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Require 'Authorization: Bearer <token>' (the file's first line) on every route but the health "
                   "probes; 401 otherwise.")
@click.option("--no-access-log", is_flag=True, help="Don't write the JSON-lines access log to stderr.")
@click.option("--triton-repo", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Instead of serving: write a Triton model repository for --onnx into this folder "
                   "(DIR/<model name>/config.pbtxt, 1/model.onnx, labels.txt) and exit (docs/SERVE.md).")
@max_pixels_option
@threads_option
@provider_option()
def serve(onnx_path: Path, host: str, port: int, model_name: str | None, engine: str, address: str | None,
          replicas: int | None, max_batch: int | None, max_wait_ms: float | None, max_queue: int | None,
          max_body_mb: float | None, token_file: Path | None, no_access_log: bool, triton_repo: Path | None,
          max_pixels: int,
          threads: int | None, provider: str) -> None:
    """Serve the model over HTTP: Open Inference Protocol v2 (/v2/...), an image endpoint (/classify), /metrics."""
    from ..deploy.serving import settings as defaults
    from ..deploy.serving.service import default_model_name
    from ..deploy.serving.service import serve as run_service

    if engine != "ray" and (address or replicas):
        raise click.UsageError("--address and --replicas need --engine ray")
    require_onnx(onnx_path)
    if triton_repo is None:
        require_extra("serve", "serve", "fastapi", "uvicorn", "prometheus_client", "multipart")
    if triton_repo is not None:
        _refuse_serving_options_with_triton_repo()
        _write_triton_repo(onnx_path, triton_repo, model_name or default_model_name(onnx_path), max_batch)
        return
    settings = defaults.ServeSettings(
        model_name=model_name or default_model_name(onnx_path),
        max_batch=max_batch or defaults.DEFAULT_MAX_BATCH,
        max_wait_ms=defaults.DEFAULT_MAX_WAIT_MS if max_wait_ms is None else max_wait_ms,
        max_queue=max_queue or defaults.DEFAULT_MAX_QUEUE,
        max_body_bytes=int((max_body_mb or defaults.DEFAULT_MAX_BODY_MB) * 1024 * 1024),
        max_pixels=max_pixels, token=defaults.read_token_file(str(token_file)) if token_file else None,
        access_log=not no_access_log)
    run_service(onnx_path, settings, host=host, port=port, provider=provider, threads=threads, engine=engine,
                address=address, replicas=replicas or 1, echo=lambda msg: click.echo(msg, err=True))


def _refuse_serving_options_with_triton_repo() -> None:
    """--triton-repo writes files and serves nothing: options about serving would be ignored, so refuse them."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = [f"--{name.replace('_', '-')}" for name in ctx.params
             if name not in ("onnx_path", "model_name", "max_batch", "triton_repo")
             and ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE]
    if given:
        raise click.UsageError(f"--triton-repo writes a model repository and serves nothing: drop {', '.join(given)}")


def _write_triton_repo(onnx_path: Path, repo: Path, name: str, max_batch: int | None) -> None:
    from ..deploy.serving.service import check_model_name
    from ..deploy.triton_repo import DEFAULT_MAX_BATCH, write_triton_repo

    folder = write_triton_repo(onnx_path, repo, name=check_model_name(name), max_batch=max_batch or DEFAULT_MAX_BATCH)
    click.echo(f"wrote {folder}/config.pbtxt, {folder}/1/model.onnx, {folder}/labels.txt: "
               f"tritonserver --model-repository {repo}")
