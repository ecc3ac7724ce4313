"""`train`, `synthetic` and `demo`: the PyTorch side (torch is imported inside the commands)."""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import click

from ..errors import RunInterrupted, Terminated
from .options import POSITIVE_INT, echo, program_name

_NEWEST = "@newest-unfinished"
# Options of `train` that are not TrainConfig fields, by --help section (the fields carry their own).
_OTHER_SECTIONS = {"config": "run", "resume": "run", "folds": "evaluation", "fold": "evaluation",
                   "dist_timeout": "distributed"}


def _fields() -> list:
    from ..training.config import TrainConfig

    return list(dataclasses.fields(TrainConfig))


def _param_name(f) -> str:
    """The click parameter of a TrainConfig field: the field's own name, or the negated flag's (no_amp, quiet)."""
    return f.metadata["option"].lstrip("-").replace("-", "_") or f.name


def _negated(f) -> bool:
    return f.type == "bool" and f.default is True


def _setting_option(f):
    """The `train` option of one TrainConfig field, from its metadata."""
    meta, kind = f.metadata, str(f.type).split(" ")[0]
    low, high, open_low = meta["range"]
    if meta["choices"]:
        ptype = click.Choice(list(meta["choices"]))
    elif kind in ("int", "float") and (low is not None or high is not None):
        ptype = (click.IntRange if kind == "int" else click.FloatRange)(low, high, min_open=open_low)
    else:
        ptype = {"int": int, "float": float}.get(kind, str)
    flag = kind == "bool"
    shown = not flag and f.default not in (None, "")
    return click.option(meta["option"] or f"--{f.name.replace('_', '-')}", _param_name(f), is_flag=flag,
                        default=False if flag else f.default, type=None if flag else ptype, show_default=shown,
                        help=meta["help"] or None)


def _resumable_options() -> str:
    return ", ".join(f.metadata["option"] or f"--{f.name.replace('_', '-')}" for f in _fields()
                     if f.metadata["resumable"])


class _SectionedCommand(click.Command):
    """`train --help` with its options grouped by section (the sections of TrainConfig's metadata)."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from ..training.config import SECTIONS

        section = {**_OTHER_SECTIONS, **{_param_name(f): f.metadata["section"] for f in _fields()}}
        groups: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record:
                groups.setdefault(section.get(param.name or "", "other"), []).append(record)
        for name in (*SECTIONS, "other"):
            if name in groups:
                with formatter.section(f"{name.capitalize()} options" if name != "other" else "Options"):
                    formatter.write_dl(groups[name])


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--config FILE: its settings become this call's defaults, so options typed on the command line win."""
    if value is None:
        return None
    from ..training.config import RECORDED_ONLY, read_config_file

    fields = {f.name: f for f in _fields()}
    defaults: dict[str, object] = {}
    for key, val in read_config_file(value).items():
        if key in fields:
            defaults[_param_name(fields[key])] = not val if _negated(fields[key]) else val
        elif key not in RECORDED_ONLY:
            click.echo(f"note: --config {value}: ignored unknown setting '{key}'", err=True)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _explicit_train_settings() -> set[str]:
    """TrainConfig fields the user typed (or set through the environment or --config) on this `train` call."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT_MAP)
    return {f.name for f in _fields() if ctx.get_parameter_source(_param_name(f)) in given}


def _typed(name: str) -> bool:
    """Whether option ``name`` was given on the command line (or in the environment), not by a --config file."""
    from click.core import ParameterSource

    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def _train_options(command):
    for f in reversed(_fields()):
        command = _setting_option(f)(command)
    return command


@click.command(cls=_SectionedCommand)
@click.option("--config", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None, is_eager=True,
              expose_value=False, callback=_load_config,
              help="JSON or YAML file of settings (e.g. a run's config.json); options given here override it.")
@_train_options
@click.option("--dist-timeout", type=click.IntRange(min=1), default=600, show_default=True,
              help="Under torchrun: seconds a process waits for the others in any collective before it "
                   "stops with an error (a dead or stuck rank never hangs the run).")
@click.option("--resume", is_flag=False, flag_value=_NEWEST, default=None, metavar="[RUN]",
              help="Continue a run (a name under RUNS_DIR or a run folder; alone: the newest unfinished run) with "
                   f"its saved settings; only {_resumable_options()} may be given.")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="K-fold cross-validation: pool train+val, cut K stratified (grouped) folds and train one model "
                   "per fold into runs/NAME/fold-<k>/; `export` then writes the K-model ensemble.")
@click.option("--fold", type=click.IntRange(min=0), default=None,
              help="With --folds: train only this fold (0..K-1), e.g. one per GPU or machine, same --name.")
def train(**opts: object) -> None:
    """Fine-tune ResNet50; keep best.pt by a validation metric and last.pt every epoch.

    Ctrl-C (exit 130) and SIGTERM (exit 143) stop it the same way: the last finished epoch is kept in last.pt,
    state.json says `interrupted`, and the message names the command that continues the run."""
    with _sigterm_as_interrupt():
        _train(opts)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises errors.Terminated (a KeyboardInterrupt) in the main thread, so `train` saves and stops as on
    Ctrl-C; a second SIGTERM while it stops is ignored. The previous handler comes back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _train(opts: dict[str, object], *, hint: bool = True):
    """`train`'s body (also `pretrain`'s training): returns the single run's TrainResult, or None for a
    cross-validation run or a rank other than 0. ``hint``: end with the next command."""
    from ..data.layouts import discover
    from ..evaluation.thresholds import parse_policy
    from ..training.config import TrainConfig
    from ..training.data_checks import discover_settings, trainable

    try:
        parse_policy(str(opts["threshold_policy"]))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threshold-policy") from None
    resume, dist_timeout = opts.pop("resume"), int(opts.pop("dist_timeout", 600))  # type: ignore[call-overload]
    folds, fold = opts.pop("folds", None), opts.pop("fold", None)
    cfg = TrainConfig(**{f.name: (not opts[_param_name(f)]) if _negated(f) else opts[_param_name(f)]
                         for f in _fields()})
    if cfg.fine_tune == "plain" and _typed("head_epochs"):  # a --config file carries every setting: not refused
        raise click.UsageError(f"--head-epochs is for --fine-tune staged; this run fine-tunes plainly "
                               f"(--weights {cfg.weights}, --fine-tune {opts['fine_tune']})")
    if not resume:  # errors in the data come before torch is imported (seconds) and before any folder
        cfg.check_class_bias(cross_validation=folds is not None)
        found = discover(cfg.data, **discover_settings(cfg), write_split_file=False)
        trainable(cfg, found, cross_validation=folds is not None, warn=lambda text: click.echo(text, err=True))
    from ..training.allocator import keep_freed_memory

    echo(f"allocator: {keep_freed_memory()}")  # before torch allocates anything
    if _cross_validation(cfg, folds, fold, resume):  # type: ignore[arg-type]
        return None
    from ..training.distributed import distributed_run
    from ..training.loop import fit

    try:
        with distributed_run(cfg.device, dist_timeout) as ctx:
            result = fit(cfg, resume=True if resume == _NEWEST else resume, explicit=_explicit_train_settings(),
                         echo=echo)
    except RunInterrupted as exc:
        exc.message = exc.text(program_name())
        raise
    except KeyboardInterrupt as exc:  # before the run folder existed
        raise RunInterrupted(cfg.run_dir, 0, cfg.epochs, False, terminated=isinstance(exc, Terminated)) from None
    if not ctx.is_main:
        return None
    click.echo(f"best {result.best_path} (epoch {result.best_epoch}, {cfg.select} {result.best_metric:.4f}); "
               f"metrics and curves in {result.run_dir}/."
               + (f" Next: {program_name()} export  (takes the newest run)" if hint else ""))
    return result


def _cross_validation(cfg, folds: int | None, fold: int | None, resume: str | bool | None) -> bool:
    """Run `train --folds K [--fold k]` (or --resume of a CV run); False when this is a single-split run.

    ``resume``: False/None, the newest-unfinished marker, or a run (name or folder) given to --resume.
    """
    from ..errors import CheckpointError
    from ..training.cross_validation import train_cv
    from ..training.runs import is_cv_run, resolve_run

    explicit = _explicit_train_settings()
    if isinstance(resume, str) and resume != _NEWEST:  # --resume RUN: a CV run folder or name continues as one
        try:
            named = resolve_run(resume, cfg.runs_dir)
        except CheckpointError:  # the single-run resume says what is missing
            return False
        if not is_cv_run(named):
            return False
        cfg = dataclasses.replace(cfg, name=named.name, runs_dir=str(named.parent))
        explicit = explicit | {"name"}
    resume = bool(resume)
    if fold is not None and folds is None and not resume:
        raise click.UsageError("--fold needs --folds K")
    if folds is None and not (resume and "name" in explicit and is_cv_run(cfg.run_dir)):
        return False
    try:
        result = train_cv(cfg, folds, fold=fold, resume=resume, explicit=explicit, echo=echo)
    except KeyboardInterrupt as exc:
        stop = RunInterrupted(cfg.run_dir, 0, 0, True, terminated=isinstance(exc, Terminated))
        how = "terminated (SIGTERM)" if stop.terminated else "interrupted"
        stop.message = (f"{how}; finished folds are kept and the current one continues from its last epoch "
                        f"with: {program_name()} train --resume {cfg.run_dir}")
        raise stop from None
    state = "complete: `export` writes the ensemble" if result.complete else "incomplete"
    click.echo(f"cross-validation run {result.run_dir} ({result.folds} folds, trained now: "
               f"{', '.join(map(str, result.trained)) or 'none'}): {state}")
    return True


@click.command()
@click.option("--data", "data_dir", type=click.Path(path_type=Path), default=Path("data/synthetic"), show_default=True)
@click.option("--epochs", type=POSITIVE_INT, default=8, show_default=True)
@click.option("--image-size", type=click.IntRange(32, 1024), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", is_flag=True)
def demo(data_dir: Path, epochs: int, image_size: int, seed: int, quiet: bool) -> None:
    """Offline end-to-end run on a generated synthetic data set: train, export, test, predict."""
    from ..training.allocator import keep_freed_memory

    echo(f"allocator: {keep_freed_memory()}")
    from ..demo import run_demo

    run_demo(data_dir, epochs=epochs, image_size=image_size, seed=seed, progress=not quiet, echo=echo)


@click.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("data/synthetic"), show_default=True)
@click.option("--train", "n_train", type=POSITIVE_INT, default=96, show_default=True, help="Training images per class.")
@click.option("--val", "n_val", type=POSITIVE_INT, default=24, show_default=True, help="Validation images per class.")
@click.option("--test", "n_test", type=POSITIVE_INT, default=30, show_default=True, help="Test images per class.")
@click.option("--size", type=click.IntRange(32, 1024), default=128, show_default=True, help="Image side in pixels.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--classes", "n_classes", type=click.IntRange(min=2), default=2, show_default=True,
              help="Number of classes: 2 is benign/malignant; more are tinted benign_* and malignant_* kinds "
                   "(K // 2 malignant), for multi-class pipelines (train --malignant malignant_...).")
@click.option("--quiet", is_flag=True)
def synthetic(out_dir: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, n_classes: int,
              quiet: bool) -> None:
    """Generate synthetic ABCD-rule lesions (split ImageFolder + masks).

    Besides the demo, a larger set is an offline pretraining source when ImageNet weights cannot be
    downloaded: train on it, then fine-tune on real data with --weights its best.pt (see README).
    """
    from ..atomic import ensure_writable_dir
    from ..data.synthetic import class_names, generate_dataset

    try:
        class_names(n_classes)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--classes") from None
    ensure_writable_dir(out_dir)
    summary = generate_dataset(out_dir, counts={"train": n_train, "val": n_val, "test": n_test}, size=size,
                               seed=seed, progress=not quiet, classes=n_classes)
    group = f"; malignancy group: --malignant {','.join(summary['malignant'])}" if "malignant" in summary else ""
    click.echo(f"synthetic data set in {out_dir}: {summary['counts']} ({size} px, seed {seed}){group}")


def _pretrain_defaults(command):
    """`pretrain`'s own defaults for the train options (training/pretrain_recipe.py), shown in its --help."""
    from ..training.pretrain_recipe import DEFAULTS

    for param in command.params:
        if param.name in DEFAULTS:
            param.default = DEFAULTS[param.name]
    return command


@_pretrain_defaults
@click.command(cls=_SectionedCommand)
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="The backbone file to write (a ResNet50 state dict without its head); its card goes beside it "
                   "as NAME.card.json, its pretraining images' fingerprints as NAME.images.json.")
@click.option("--from-run", type=str, default=None, metavar="RUN",
              help="Make the backbone of a finished training run (a name under --runs-dir or a run folder) "
                   "instead of training one; no train option may be given with it.")
@click.option("--licence", default="", help="The pretraining data's licence, recorded on the card (default: the one "
                                            "its README.md names, e.g. HAM10000's CC BY-NC 4.0).")
@_train_options
@click.option("--resume", is_flag=False, flag_value=_NEWEST, default=None, metavar="[RUN]",
              help="Continue an interrupted pretraining run (as `train --resume`), then write the backbone.")
def pretrain(output: Path, from_run: str | None, licence: str, **opts: object) -> None:
    """Pretrain a backbone on a large labelled dermoscopy set (HAM10000: all classes, class-balanced, split by
    lesion) and write it with its card, for `train --weights FILE` on a small set.

    A `train` run underneath (RUNS_DIR/NAME/, resumable; Ctrl-C and SIGTERM stop it as they stop `train`); the
    data's licence goes with the weights (HAM10000: CC BY-NC 4.0, non-commercial research only)."""
    if from_run is not None:
        given = sorted(f"--{name.replace('_', '-')}" for name in _explicit_train_settings() - {"runs_dir", "progress"})
        if given or opts.get("resume"):
            raise click.UsageError(f"--from-run makes the backbone of a finished run without training: "
                                   f"{', '.join(given) or '--resume'} would do nothing")
        from ..training.runs import resolve_run

        run = resolve_run(from_run, Path(str(opts["runs_dir"])))
    else:
        if not opts.get("resume"):
            opts.update(_recipe_from_data(opts))
        with _sigterm_as_interrupt():
            result = _train(opts, hint=False)
        if result is None:
            return
        run = result.run_dir
    from ..training.backbone import write_backbone

    write_backbone(run, output, licence=licence, progress=not opts.get("quiet"), echo=echo)
    click.echo(f"Next: {program_name()} train --data YOUR_DATA --weights {output}  (staged fine-tuning; the data "
               "is checked against the pretraining images first)")


def _recipe_from_data(opts: dict[str, object]) -> dict[str, object]:
    """The settings `pretrain` reads off the data (lesion column, malignancy group, class bias) unless given."""
    from ..data.layouts import discover
    from ..training.pretrain_recipe import from_data, group_column

    given = _explicit_train_settings()
    data = discover(str(opts["data"]), malignant=None, write_split_file=False,
                    group_column=str(opts["group_column"]) if "group_column" in given
                    else group_column(str(opts["data"])) or "group")
    return from_data(data, given, str(opts["data"]))
