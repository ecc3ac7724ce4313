"""`train`, `synthetic` and `demo`: the PyTorch side (torch is imported inside the commands)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import RunInterrupted
from .options import POSITIVE_INT, echo, max_pixels_option, program_name, threads_option

# Options whose TrainConfig field is their negation, and options stored under another field name.
_NEGATED_FLAGS = {"no_calibrate": "calibrate", "no_amp": "amp", "no_channels_last": "channels_last",
                  "quiet": "progress", "no_augment": "augment"}
_RENAMED = {"compile_mode": "compile"}
# What a run records in config.json besides its settings: read back with --config, not options.
_RECORDED_ONLY = {"skinonnx_version", "torch_version", "device_used", "world_size", "classes", "counts",
                  "class_loss_weights", "layout", "preprocessing"}
_NEWEST = "@newest-unfinished"


def _load_config(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--config FILE: its settings become this call's defaults, so options typed on the command line win."""
    if value is None:
        return None
    from ..training.config import read_config_file

    options = {p.name for p in ctx.command.params}
    flags = {field: flag for flag, field in _NEGATED_FLAGS.items()}
    renamed = {field: option for option, field in _RENAMED.items()}
    defaults: dict[str, object] = {}
    for key, val in read_config_file(value).items():
        if key in flags:
            defaults[flags[key]] = not val
        elif key in renamed:
            defaults[renamed[key]] = val
        elif key in options and key not in ("config", "resume"):
            defaults[key] = val
        elif key not in _RECORDED_ONLY:
            click.echo(f"note: --config {value}: ignored unknown setting '{key}'", err=True)
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _explicit_train_settings() -> set[str]:
    """TrainConfig fields the user typed (or set through the environment) on this `train` call."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    typed = {name for name in ctx.params if ctx.get_parameter_source(name) in
             (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT_MAP)}
    fields = {**_NEGATED_FLAGS, **_RENAMED}
    return {fields.get(name, name) for name in typed} - {"resume", "config"}


@click.command()
@click.option("--config", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None, is_eager=True,
              expose_value=False, callback=_load_config,
              help="JSON or YAML file of settings (e.g. a run's config.json); options given here override it.")
@click.option("--data", default="data/synthetic", show_default=True,
              help="Data folder (split or flat ImageFolder) or index CSV (path,label,split).")
@click.option("--weights", default="imagenet", show_default=True,
              help="'imagenet' (torchvision), 'none' (random init) or a path to a ResNet50 state dict.")
@click.option("--epochs", type=POSITIVE_INT, default=15, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True,
              help="Global batch per optimizer step. Under torchrun it is split evenly among the processes "
                   "(each takes batch-size / world size), so the same value trains the same way at any scale.")
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
@threads_option
@click.option("--compile", "compile_mode", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="torch.compile the training step; auto: when the run is long enough to repay the compile time.")
@click.option("--no-amp", is_flag=True,
              help="Disable mixed precision (fp16 on CUDA; bf16 on CPUs with AVX512-BF16/AMX).")
@click.option("--no-augment", is_flag=True,
              help="Train on the centre crop only (deterministic; e.g. to check torchrun against one process).")
@click.option("--freeze-bn", is_flag=True,
              help="BatchNorm keeps its running statistics (e.g. ImageNet's); only its scale and shift train. "
                   "Makes results independent of the per-process batch.")
@click.option("--sync-bn", is_flag=True,
              help="Under torchrun on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm).")
@click.option("--dist-timeout", type=click.IntRange(min=1), default=600, show_default=True,
              help="Under torchrun: seconds a process waits for the others in any collective before it "
                   "stops with an error (a dead or stuck rank never hangs the run).")
@click.option("--no-channels-last", is_flag=True, help="Keep NCHW memory format.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=2048, show_default=True,
              help="Memory for decoded training images; the rest streams from disk.")
@max_pixels_option
@click.option("--class-weights", type=click.Choice(["none", "auto"]), default="none", show_default=True,
              help="auto: weight the loss by n / (2 n_class) from the training split (for imbalanced data).")
@click.option("--sampler", type=click.Choice(["shuffle", "balanced"]), default="shuffle", show_default=True,
              help="balanced: draw both classes equally often per epoch (with replacement).")
@click.option("--name", default="", help="Run name: the run lives in RUNS_DIR/NAME/ (default: a time stamp; "
              "a taken name gets -2, -3...).")
@click.option("--checkpoint-dir", default="", help="Keep best.pt/last.pt here instead of the run's weights/ folder.")
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--resume", is_flag=False, flag_value=_NEWEST, default=None, metavar="[RUN]",
              help="Continue a run (a name under RUNS_DIR or a run folder; alone: the newest unfinished run) with "
                   "its saved settings; only --epochs, --early-stop, --data, --device, --workers, --cache-mb, "
                   "--max-pixels and --quiet may be given.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="K-fold cross-validation: pool train+val, cut K stratified (grouped) folds and train one model "
                   "per fold into runs/NAME/fold-<k>/; `export` then writes the K-model ensemble.")
@click.option("--fold", type=click.IntRange(min=0), default=None,
              help="With --folds: train only this fold (0..K-1), e.g. one per GPU or machine, same --name.")
def train(**opts: object) -> None:
    """Fine-tune ResNet50; keep best.pt by a validation metric and last.pt every epoch."""
    from ..evaluation.thresholds import parse_policy
    from ..training.allocator import keep_freed_memory

    echo(f"allocator: {keep_freed_memory()}")  # before torch allocates anything
    from ..training.distributed import distributed_run
    from ..training.loop import TrainConfig, fit

    try:
        parse_policy(str(opts["threshold_policy"]))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threshold-policy") from None
    resume = opts.pop("resume")
    quiet = bool(opts.pop("quiet"))
    dist_timeout = int(opts.pop("dist_timeout"))  # type: ignore[call-overload]
    folds, fold = opts.pop("folds"), opts.pop("fold")
    cfg = TrainConfig(
        data=str(opts["data"]), name=str(opts["name"]), weights=str(opts["weights"]), epochs=int(opts["epochs"]),
        batch_size=int(opts["batch_size"]), lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"]),
        optimizer=str(opts["optimizer"]), scheduler=str(opts["scheduler"]), early_stop=int(opts["early_stop"]),
        image_size=int(opts["image_size"]), select=str(opts["select"]),
        threshold_policy=str(opts["threshold_policy"]), calibrate=not opts["no_calibrate"],
        positive_class=opts["positive_class"], seed=int(opts["seed"]), device=str(opts["device"]),  # type: ignore[arg-type]
        workers=opts["workers"], amp=not opts["no_amp"], channels_last=not opts["no_channels_last"],  # type: ignore[arg-type]
        augment=not opts["no_augment"], freeze_bn=bool(opts["freeze_bn"]), sync_bn=bool(opts["sync_bn"]),
        threads=opts["threads"], compile=str(opts["compile_mode"]),  # type: ignore[arg-type]
        cache_mb=int(opts["cache_mb"]), max_pixels=int(opts["max_pixels"]),
        class_weights=str(opts["class_weights"]), sampler=str(opts["sampler"]),
        checkpoint_dir=str(opts["checkpoint_dir"] or ""), runs_dir=str(opts["runs_dir"]), progress=not quiet)
    if _cross_validation(cfg, folds, fold, resume):  # type: ignore[arg-type]
        return
    try:
        with distributed_run(cfg.device, dist_timeout) as ctx:
            result = fit(cfg, resume=True if resume == _NEWEST else resume,
                         explicit=_explicit_train_settings() - {"dist_timeout"}, echo=echo)
    except RunInterrupted as exc:
        exc.message = exc.text(program_name())
        raise
    except KeyboardInterrupt:  # before the run folder existed
        raise RunInterrupted(cfg.run_dir, 0, cfg.epochs, False) from None
    if not ctx.is_main:
        return
    click.echo(f"best {result.best_path} (epoch {result.best_epoch}, {cfg.select} {result.best_metric:.4f}); "
               f"metrics and curves in {result.run_dir}/. Next: {program_name()} export  (takes the newest run)")


def _cross_validation(cfg, folds: int | None, fold: int | None, resume: str | bool | None) -> bool:
    """Run `train --folds K [--fold k]` (or --resume of a CV run); False when this is a single-split run.

    ``resume``: False/None, the newest-unfinished marker, or a run (name or folder) given to --resume.
    """
    import dataclasses

    from ..training.cross_validation import is_cv_run, train_cv

    explicit = _explicit_train_settings()
    if isinstance(resume, str) and resume != _NEWEST:  # --resume RUN: a CV run folder or name continues as one
        named = Path(resume) if Path(resume).is_dir() else Path(cfg.runs_dir) / resume
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
    except KeyboardInterrupt:
        stop = RunInterrupted(cfg.run_dir, 0, 0, True)
        stop.message = (f"interrupted; finished folds are kept and the current one continues from its last epoch "
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
@click.option("--quiet", is_flag=True)
def synthetic(out_dir: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, quiet: bool) -> None:
    """Generate synthetic ABCD-rule lesions (split ImageFolder + masks).

    Besides the demo, a larger set is an offline pretraining source when ImageNet weights cannot be
    downloaded: train on it, then fine-tune on real data with --weights its best.pt (see README).
    """
    from ..atomic import ensure_writable_dir
    from ..data.synthetic import generate_dataset

    ensure_writable_dir(out_dir)
    summary = generate_dataset(out_dir, counts={"train": n_train, "val": n_val, "test": n_test}, size=size,
                               seed=seed, progress=not quiet)
    click.echo(f"synthetic data set in {out_dir}: {summary['counts']} ({size} px, seed {seed})")
