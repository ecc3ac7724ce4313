"""`train`, `synthetic` and `demo`: the PyTorch side (torch is imported inside the commands)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import SkinOnnxError
from .options import POSITIVE_INT, echo, max_pixels_option

_NEGATED_FLAGS = {"no_calibrate": "calibrate", "no_amp": "amp", "no_channels_last": "channels_last",
                  "quiet": "progress"}


def _explicit_train_settings() -> set[str]:
    """TrainConfig fields the user typed (or set through the environment) on this `train` call."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    typed = {name for name in ctx.params
             if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)}
    return {_NEGATED_FLAGS.get(name, name) for name in typed} - {"resume"}


@click.command()
@click.option("--data", default="data/synthetic", show_default=True,
              help="Data folder (split or flat ImageFolder) or index CSV (path,label,split).")
@click.option("--weights", default="imagenet", show_default=True,
              help="'imagenet' (torchvision), 'none' (random init) or a path to a ResNet50 state dict.")
@click.option("--epochs", type=POSITIVE_INT, default=15, show_default=True)
@click.option("--batch-size", type=POSITIVE_INT, default=16, show_default=True)
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
@click.option("--no-amp", is_flag=True, help="Disable mixed precision on CUDA.")
@click.option("--no-channels-last", is_flag=True, help="Keep NCHW memory format.")
@click.option("--cache-mb", type=click.IntRange(min=0), default=2048, show_default=True,
              help="Memory for decoded training images; the rest streams from disk.")
@max_pixels_option
@click.option("--name", default="", help="Run name under runs/ (default: a time stamp).")
@click.option("--checkpoint-dir", default="checkpoints", show_default=True)
@click.option("--runs-dir", default="runs", show_default=True)
@click.option("--resume", is_flag=True,
              help="Continue from CHECKPOINT_DIR/last.pt with its saved settings; only --epochs, --early-stop, "
                   "--data, --device, --workers, --cache-mb, --max-pixels, --runs-dir and --quiet may be given.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@click.option("--folds", type=click.IntRange(min=2), default=None,
              help="K-fold cross-validation: pool train+val, cut K stratified (grouped) folds and train one model "
                   "per fold into runs/NAME/fold-<k>/; `export` then writes the K-model ensemble.")
@click.option("--fold", type=click.IntRange(min=0), default=None,
              help="With --folds: train only this fold (0..K-1), e.g. one per GPU or machine, same --name.")
def train(**opts: object) -> None:
    """Fine-tune ResNet50; keep best.pt by a validation metric and last.pt every epoch."""
    from ..evaluation.thresholds import parse_policy
    from ..training.loop import TrainConfig, fit

    try:
        parse_policy(str(opts["threshold_policy"]))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--threshold-policy") from None
    resume = bool(opts.pop("resume"))
    quiet = bool(opts.pop("quiet"))
    folds, fold = opts.pop("folds"), opts.pop("fold")
    cfg = TrainConfig(
        data=str(opts["data"]), name=str(opts["name"]), weights=str(opts["weights"]), epochs=int(opts["epochs"]),
        batch_size=int(opts["batch_size"]), lr=float(opts["lr"]), weight_decay=float(opts["weight_decay"]),
        optimizer=str(opts["optimizer"]), scheduler=str(opts["scheduler"]), early_stop=int(opts["early_stop"]),
        image_size=int(opts["image_size"]), select=str(opts["select"]),
        threshold_policy=str(opts["threshold_policy"]), calibrate=not opts["no_calibrate"],
        positive_class=opts["positive_class"], seed=int(opts["seed"]), device=str(opts["device"]),  # type: ignore[arg-type]
        workers=opts["workers"], amp=not opts["no_amp"], channels_last=not opts["no_channels_last"],  # type: ignore[arg-type]
        cache_mb=int(opts["cache_mb"]), max_pixels=int(opts["max_pixels"]),
        checkpoint_dir=str(opts["checkpoint_dir"]), runs_dir=str(opts["runs_dir"]), progress=not quiet)
    if _cross_validation(cfg, folds, fold, resume):  # type: ignore[arg-type]
        return
    try:
        result = fit(cfg, resume=resume, explicit=_explicit_train_settings(), echo=echo)
    except KeyboardInterrupt:
        raise SkinOnnxError(f"interrupted; the last completed epoch is in {cfg.checkpoint_dir}/last.pt "
                            "(continue with --resume)") from None
    click.echo(f"best {result.best_path} (epoch {result.best_epoch}, {cfg.select} {result.best_metric:.4f}); "
               f"metrics in {result.run_dir / 'metrics.csv'}")


def _cross_validation(cfg, folds: int | None, fold: int | None, resume: bool) -> bool:
    """Run `train --folds K [--fold k]` (or --resume of a CV run); False when this is a single-split run."""
    from ..training.cross_validation import is_cv_run, train_cv

    explicit = _explicit_train_settings()
    if fold is not None and folds is None and not resume:
        raise click.UsageError("--fold needs --folds K")
    if folds is None and not (resume and "name" in explicit and is_cv_run(cfg.run_dir)):
        return False
    try:
        result = train_cv(cfg, folds, fold=fold, resume=resume, explicit=explicit, echo=echo)
    except KeyboardInterrupt:
        raise SkinOnnxError("interrupted; finished folds are kept and the current one continues from its last "
                            "epoch with --resume") from None
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
