"""`audit`: duplicates and leakage, unreadable and poor images, likely label errors; a report, nothing changed."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .options import (
    echo,
    exit_codes_epilog,
    exit_zero_option,
    gate_exit,
    max_pixels_option,
    report_folder,
    require_extra,
    runs_dir_option,
)


@click.command(epilog=exit_codes_epilog("leakage across splits, or duplicates with conflicting labels"))
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="Data set (split folders, index CSV or class folders); default: the --run's training data.")
@click.option("--run", "run", default=None, metavar="RUN",
              help="A cross-validation run (`train --folds K`; a name under --runs-dir or a folder): rank likely "
                   "label errors from its out-of-fold probabilities (cleanlab).")
@runs_dir_option
@click.option("--output", "-o", type=click.Path(path_type=Path, file_okay=False), default=report_folder("audit"),
              show_default=True, help="Folder for audit.json, audit.html (+ audit_files/) and exclude.txt.")
@click.option("--exclude-list", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Leave out the images listed in FILE (one path per line, relative to the data root).")
@max_pixels_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@exit_zero_option
def audit(data: Path | None, run: str | None, runs_dir: Path, output: Path, exclude_list: Path | None,
          max_pixels: int, quiet: bool, exit_zero: bool) -> None:
    """Audit a data set before trusting a number: duplicates and train/test leakage, image quality, label errors."""
    require_extra("audit", "audit", "cleanvision", *(["cleanlab"] if run else []))
    from ..audit.run import run_audit
    from ..data.training_data import model_data

    run_dir = None
    recorded = None
    if run is not None:
        from ..training.runs import resolve_run

        run_dir = resolve_run(run, runs_dir)
        try:
            recorded = json.loads((run_dir / "cv.json").read_text(encoding="utf-8"))["config"]["data"]
        except (OSError, ValueError, KeyError, TypeError):
            recorded = None  # read_out_of_fold names what is wrong with the run
    if data is None and run is None:
        raise click.UsageError("give --data DIR (and optionally --run RUN)")
    data_path = model_data(data, recorded, needed_for="audit")
    doc = run_audit(data_path, output, run_dir=run_dir, exclude_list=exclude_list, max_pixels=max_pixels,
                    progress=not quiet, echo=echo)
    s = doc["summary"]
    gate_exit([f"{n} {what}" for n, what in ((s["leakage_pairs"], "leakage pair(s)"),
                                            (s["conflicting_pairs"], "duplicate pair(s) with conflicting labels"))
               if n], exit_zero)
