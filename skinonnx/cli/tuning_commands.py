"""`tune`: hyperparameter search over `train`'s settings (Optuna by default, Ray Tune with --engine ray)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import echo
from .training_commands import _explicit_train_settings, _fields, _load_config, _negated, _param_name, _train_options

_DEFAULT_NAME = "study"


@click.command()
@click.option("--config", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None, is_eager=True,
              expose_value=False, callback=_load_config,
              help="JSON or YAML file of fixed settings (as `train --config`); options given here override it.")
@click.option("--trials", type=click.IntRange(min=1), required=True,
              help="Trials the study should have (finished, pruned or failed); a resumed study runs the rest.")
@click.option("--space", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="YAML/JSON search space: setting -> {low, high[, log]} or {choices: [...]} (default: lr, "
                   "weight decay, label smoothing, augmentation strength, image size; docs/TUNING.md).")
@click.option("--pruner", type=click.Choice(["median", "halving", "none"]), default="median", show_default=True,
              help="Stop bad trials early on their per-epoch validation AUC: median of earlier trials, or "
                   "successive halving.")
@click.option("--engine", type=click.Choice(["optuna", "ray"]), default="optuna", show_default=True,
              help="optuna: trials one after another in this process (SQLite study, resumable); ray: Ray Tune "
                   "(Optuna search + ASHA) with trials on a Ray cluster's workers.")
@click.option("--address", default=None,
              help="With --engine ray: a running Ray cluster (ray://host:10001 or auto); default: a private local "
                   "Ray bound to 127.0.0.1.")
@click.option("--parallel", type=click.IntRange(min=1), default=2, show_default=True,
              help="With --engine ray: trials at once (one CPU each on a local Ray).")
@_train_options
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="Each trial is a K-fold cross-validation; the objective is its out-of-fold AUC.")
@click.pass_context
def tune(ctx: click.Context, trials: int, space: Path | None, pruner: str, engine: str, address: str | None,
         parallel: int, folds: int | None, **opts: object) -> None:
    """Search `train`'s settings (lr, weight decay, ...) for the best validation AUC; `train`'s options given here
    are fixed. The study lives in RUNS_DIR/NAME (default NAME: study) and goes on when run again."""
    from click.core import ParameterSource

    from ..data.layouts import discover
    from ..training.config import TrainConfig
    from ..tuning.space import default_space, load_space
    from ..tuning.study import StudySettings

    if ctx.get_parameter_source("address") is not ParameterSource.DEFAULT and engine != "ray":
        raise click.UsageError("--address is for --engine ray")
    if ctx.get_parameter_source("parallel") is not ParameterSource.DEFAULT and engine != "ray":
        raise click.UsageError("--parallel is for --engine ray (the Optuna engine runs one trial at a time)")
    explicit = _explicit_train_settings()
    if "name" not in explicit:
        opts["name"] = _DEFAULT_NAME
    cfg = TrainConfig(**{f.name: (not opts[_param_name(f)]) if _negated(f) else opts[_param_name(f)]
                         for f in _fields()})
    fixed = explicit - {"data", "name", "runs_dir", "progress", "track", "tracking_uri", "device", "workers",
                        "threads", "cache_mb", "compile"}
    searched = load_space(space, fixed) if space is not None else default_space(fixed)
    discover(cfg.data, positive_class=cfg.positive_class, seed=cfg.seed, write_split_file=False)  # before torch
    settings = StudySettings(trials, searched, folds, pruner, engine)
    from ..training.allocator import keep_freed_memory

    keep_freed_memory()
    if engine == "ray":
        from ..tuning.ray_engine import run_ray_study

        run_ray_study(cfg, settings, address=address, parallel=parallel, echo=echo)
    else:
        from ..tuning.study import run_study

        run_study(cfg, settings, echo=echo)
