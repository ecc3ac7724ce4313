"""`explain`: Grad-CAM overlays from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SkinOnnxError
from .options import (
    DEFAULT_ONNX,
    POSITIVE_INT,
    checkpoint_option,
    max_pixels_option,
    renamed_option,
    report_folder,
    require_onnx,
    runs_dir_option,
)


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@checkpoint_option
@runs_dir_option
@click.option("--output", "-o", "out_dir", type=click.Path(path_type=Path, file_okay=False), show_default=True,
              default=report_folder("gradcam"), help="Folder for the overlay PNGs and explanations.csv.")
@renamed_option("--out", "--output", "out_dir", type=click.Path(path_type=Path, file_okay=False))
@click.option("--class", "target_class", default=None,
              help="Class whose evidence the map shows (default: two classes the positive class; more the class "
                   "decided for each image).")
@click.option("--masks", type=click.Path(path_type=Path), default=None,
              help="Folder of lesion masks (X.png or X_segmentation.png for image X): also play the pointing game.")
@click.option("--tolerance", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Pointing game: a peak this many model-input pixels from the lesion still counts as a hit.")
@click.option("--batch-size", type=POSITIVE_INT, default=8, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@max_pixels_option
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), default=None,
              help=f"The ONNX export of the checkpoint: captions show its decision, 'not assessed' included "
                   f"(default: {DEFAULT_ONNX} when it was exported from this checkpoint).")
@click.option("--quiet", is_flag=True)
def explain(inputs: tuple[str, ...], checkpoint: str | None, runs_dir: Path, out_dir: Path,
            target_class: str | None, masks: Path | None, tolerance: float, batch_size: int, device: str,
            onnx_path: Path | None, max_pixels: int, quiet: bool) -> None:
    """Grad-CAM heatmap overlays (PNG) from the last convolutional block, at the model's preprocessing."""
    from ..data.inputs import collect_inputs
    from .options import resolve_checkpoint_option

    paths, problems = collect_inputs(inputs)
    checkpoint = resolve_checkpoint_option(checkpoint, runs_dir)
    decision_model = _export_of(Path(checkpoint), onnx_path)
    from ..explain.run import explain_files  # torch

    result = explain_files(checkpoint, paths, out_dir, target_class=target_class, batch_size=batch_size,
                           device=device, masks=masks, tolerance=tolerance, max_pixels=max_pixels,
                           progress=not quiet, decision_model=decision_model)
    for note in result.notes:
        click.echo(note, err=True)
    for path, problem in [(p["path"], p["problem"]) for p in problems] + result.skipped:
        click.echo(f"skipped {path}: {problem}", err=True)
    if not result.explanations:
        raise SkinOnnxError("no image could be explained")
    what = (f"each image's decided class ({', '.join(sorted({e.target for e in result.explanations}))})"
            if result.per_image else f"'{result.explanations[0].target}'")
    click.echo(f"{len(result.explanations)} Grad-CAM overlays for {what} in {out_dir}/ (summary: {result.csv_path})")
    if result.pointing is not None:
        click.echo(result.pointing.text())
    elif masks is not None:
        click.echo(f"no image had a mask in {masks}", err=True)


def _export_of(checkpoint: Path, onnx_path: Path | None) -> Path | None:
    """--onnx (which must be an export of ``checkpoint``), else the default export when it is one, else None."""
    from ..deploy.info import read_header
    from ..hashing import file_sha256

    candidate = onnx_path or Path(DEFAULT_ONNX)
    if onnx_path is not None:
        require_onnx(onnx_path)
    elif not candidate.is_file():
        return None
    made_from = read_header(candidate).metadata.get("source_checkpoint_sha256")
    if made_from == file_sha256(checkpoint):
        return candidate
    if onnx_path is not None:
        raise SkinOnnxError(f"--onnx {onnx_path} was not exported from {checkpoint} (its source_checkpoint_sha256 "
                            "differs): export this checkpoint, or pass its own export")
    return None
