"""Fine-tuning: one function per phase (load_data, train_one_epoch, fit); evaluate lives in validate.py."""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from .. import __version__
from ..atomic import ensure_writable_dir, write_json, write_text
from ..data.layouts import LabeledData, Sample
from ..data.preprocessing import Preprocessing
from ..data.pretraining import backbone_record
from ..errors import CheckpointError, DataError, RunInterrupted, SkinOnnxError, Terminated
from . import distributed, fine_tune, runs, tracked_run
from .checkpoint import RESUME_KEYS, CheckpointSaver, load_checkpoint, require_keys
from .compile import compiled_for_training, decide
from .config import SELECT_METRICS, TrainConfig, resumed_config
from .data_checks import checked_data
from .device import amp_dtype, autocast, configure_threads, resolve_device, seed_everything
from .epoch_report import CURVES_EVERY_S, run_eta, write_training_curves
from .finalize import finalize_best
from .imbalance import auto_class_weights, balanced_sampler
from .loaders import ImageCache, LesionDataset, default_workers, make_loader
from .model import ARCH, build_model, check_weights_spec
from .validate import evaluate, validation_metrics


@dataclass
class TrainResult:
    best_path: Path
    last_path: Path
    run_dir: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    skipped: list[tuple[str, str]]
    val_samples: list[Sample] = field(default_factory=list)  # the usable val images, in best.pt's val_predictions order
    stopped: bool = False  # an ``on_epoch`` callback stopped the run (e.g. a pruned trial); best.pt is not calibrated


#: Called after each epoch (rank 0) with the epoch and its metrics row; returning True stops the run there
#: (`tune` prunes a trial this way). The loop knows nothing about who asks.
EpochCallback = Callable[[int, dict[str, float]], bool | None]


def load_data(cfg: TrainConfig, data: LabeledData, prep: Preprocessing, device: torch.device):
    """DataLoaders for train (augmented, shuffled) and val (the shared eval preprocessing).

    Training draws through a DistributedSampler (one replica when alone) unless ``--sampler balanced``: the
    sample order of an epoch depends only on the seed and the epoch, so a torchrun run with global batch B sees
    exactly the batches of a one-process run with batch B. Under torchrun, validation is sharded too (see
    gather_by_index).
    """
    cache = ImageCache(prep, limit_bytes=cfg.cache_mb << 20, max_pixels=cfg.max_pixels)
    train_samples, skipped = cache.fill(data.split("train"), progress=cfg.progress, desc="decode train")
    val_samples, skipped_val = cache.fill(data.split("val"), progress=cfg.progress, desc="decode val")
    skipped += skipped_val
    for split, samples in (("train", train_samples), ("val", val_samples)):
        present = {s.label for s in samples}
        if len(present) < len(data.classes):
            raise DataError(f"the {split} split has no usable images of class "
                            f"{[c for i, c in enumerate(data.classes) if i not in present]}")
    workers = default_workers(device) if cfg.workers is None else cfg.workers
    ctx, batch = distributed.current(), distributed.per_process_batch(cfg.batch_size)
    train_set = LesionDataset(train_samples, cache, train=cfg.augment, strength=cfg.augment_strength)
    val_set = LesionDataset(val_samples, cache, train=False)
    if cfg.sampler == "balanced":
        if ctx.enabled:
            raise SkinOnnxError("--sampler balanced is not supported under torchrun; use --class-weights auto")
        train_sampler = balanced_sampler([s.label for s in train_samples], cfg.seed)
    else:
        train_sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                           seed=cfg.seed) if train_set.samples else None
    val_sampler = DistributedSampler(val_set, num_replicas=ctx.world_size, rank=ctx.rank,
                                     shuffle=False) if ctx.enabled and val_set.samples else None
    train_loader = make_loader(train_set, batch_size=batch, shuffle=True, workers=workers, seed=cfg.seed,
                               device=device, sampler=train_sampler)
    val_loader = make_loader(val_set, batch_size=batch, shuffle=False, workers=workers, seed=cfg.seed,
                             device=device, sampler=val_sampler)
    return train_loader, val_loader, skipped


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """AdamW or SGD; with ``--fine-tune staged`` its groups carry the discriminative rates (fine_tune.py)."""
    if cfg.fine_tune == "staged":
        groups = fine_tune.param_groups(model, cfg.lr, cfg.weight_decay)
    else:
        decay = [p for n, p in model.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":  # the choices are checked by TrainConfig
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.scheduler == "plateau":  # the original project's: factor 0.2 on a stalled val loss
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, patience=2)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, device: torch.device, *, scaler: torch.amp.GradScaler, amp: bool,
               channels_last: bool, dtype: torch.dtype | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on one batch; returns detached (loss, logits, targets on the device).

    ``dtype``: the autocast type (device.amp_dtype); on the CPU autocast needs it (bf16)."""
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = targets.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp, dtype):
        logits = model(images)
        loss = criterion(logits, targets)
    if not torch.isfinite(loss):
        raise SkinOnnxError("training diverged (loss is not finite); lower --lr")
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), logits.detach(), targets


def train_one_epoch(model: nn.Module, loader, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                    device: torch.device, *, scaler: torch.amp.GradScaler, amp: bool, channels_last: bool,
                    desc: str = "train", progress: bool = True, freeze_bn: bool = False,
                    dtype: torch.dtype | None = None) -> dict[str, float]:
    model.train()
    if freeze_bn:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)
    for images, targets in bar:
        loss, logits, targets = train_step(model, images, targets, criterion, optimizer, device, scaler=scaler,
                                           amp=amp, channels_last=channels_last, dtype=dtype)
        n = targets.numel()
        total_loss += loss.item() * n
        correct += (logits.argmax(1) == targets).sum().item()
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", img_s=f"{seen / (time.perf_counter() - start):.1f}")
    elapsed = time.perf_counter() - start
    total_loss, correct, seen = distributed.sum_values([total_loss, correct, seen], device)  # all ranks' images
    return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
            "train_images_per_s": seen / elapsed if elapsed > 0 else 0.0}


def _write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def validate_all(model: nn.Module, val_loader, device: torch.device, *, amp: bool, channels_last: bool
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of the whole validation split, each image once, on every rank."""
    distributed.sync_buffers(model)
    logits, labels = evaluate(distributed.unwrap(model), val_loader, device, amp=amp, channels_last=channels_last)
    if isinstance(val_loader.sampler, DistributedSampler):
        logits, labels = distributed.gather_by_index(list(val_loader.sampler), logits, labels,
                                                     len(val_loader.dataset))
    return logits, labels


def _silent(*_args: object, **_kwargs: object) -> None:
    """echo for ranks other than 0: one process speaks."""


def _resumed(cfg: TrainConfig, resume: bool | str, explicit: frozenset[str] | set[str], ctx, echo
             ) -> tuple[TrainConfig, dict[str, Any]]:
    """The saved settings and last.pt (the run named, else the newest unfinished one; a --checkpoint-dir run's
    weights folder); rank 0 reads it and hands it to the others (other nodes need no copy of the folder)."""
    found = None
    if ctx.is_main:
        run = None
        if "checkpoint_dir" in explicit and cfg.checkpoint_dir:  # weights kept outside the run folder
            last_path = Path(cfg.checkpoint_dir) / "last.pt"
        else:
            run = runs.resolve_run(resume, cfg.runs_dir) if resume is not True else runs.newest_unfinished_run(
                cfg.runs_dir)
            if resume is True:
                echo(f"--resume without a run: continuing the newest unfinished run, {run}")
            last_path = runs.weights_dir(run) / "last.pt"
        found = (last_path, run, load_checkpoint(last_path))
    last_path, run, state = distributed.broadcast_object(found)  # type: ignore[misc]
    require_keys(state, RESUME_KEYS, last_path, "--resume")
    cfg = resumed_config(state.get("config") or {}, cfg, {*explicit, "checkpoint_dir"}, last_path)
    if run is not None:  # the run folder may have moved: it is where this run lives now
        cfg = dataclasses.replace(cfg, runs_dir=str(run.parent), name=run.name, checkpoint_dir="")
    echo(f"resuming run '{cfg.name}' from {last_path} (epoch {state['epoch']} of {cfg.epochs})")
    if int(state["epoch"]) >= cfg.epochs:
        echo(f"note: the run already completed {state['epoch']} epochs; pass a larger --epochs to train on")
    return cfg, state


def fit(cfg: TrainConfig, *, resume: bool | str | None = False, explicit: frozenset[str] | set[str] = frozenset(),
        echo=print, data: LabeledData | None = None, claimed: bool = False,
        leakage: dict[str, Any] | None = None, on_epoch: Sequence[EpochCallback] = (),
        tracking_parent: Any = None) -> TrainResult:
    """Train, keeping best.pt (by the selection metric) and last.pt (every epoch, for --resume).

    Phases, as torchvision's references/classification: check settings, weights and data; claim the run folder
    (``runs/<name>/``, else ``-2``, ``-3``..., atomically); :func:`_build`; :func:`_run_epochs`; calibrate best.pt.
    ``resume``: a run name or folder, or True for the newest unfinished run. ``explicit``: the settings given on
    this call (on resume only the resumable ones may differ from the saved run). ``data``: splits to use instead of
    ``cfg.data`` (cross-validation's folds); ``claimed``: the caller made ``cfg.run_dir`` for this run. A start that
    fails before its first epoch removes the folder it claimed. Ctrl-C (and SIGTERM, raised as errors.Terminated by
    `train`) raises RunInterrupted naming the run. ``on_epoch``: callbacks after each epoch (:data:`EpochCallback`);
    ``tracking_parent``: the MLflow run this one is a child of (a CV run's or a study's), with ``--track``.
    """
    cfg.check_class_bias(cross_validation=claimed)  # a fold of --folds is the only claimed run
    ctx = distributed.setup(resolve_device(cfg.device))  # no-op outside torchrun
    distributed.check_sync_bn(cfg.sync_bn, resolve_device(cfg.device))
    if not ctx.is_main:  # rank 0 alone prints, shows progress and writes files
        echo, cfg = _silent, dataclasses.replace(cfg, progress=False)
    state: dict[str, Any] | None = None
    if resume is not False and resume is not None:
        cfg, state = _resumed(cfg, resume or True, explicit, ctx, echo)
    else:
        check_weights_spec(cfg.weights)  # before any data is read
    if cfg.fine_tune == "staged" and ctx.enabled:
        raise SkinOnnxError("--fine-tune staged is not supported under torchrun (DDP fixes the trained parameters "
                            "when it wraps the model); use --fine-tune plain")
    with distributed.rank0_first():  # a flat folder's split file is written once; rank 0 fills the hash cache
        if data is None:  # refused here, before a run folder exists, when test/val images duplicate training ones
            data, leakage = checked_data(cfg, echo)
    if state is not None and tuple(state["classes"]) != data.classes:
        raise CheckpointError(f"checkpoint classes {state['classes']} differ from the data's {list(data.classes)}")
    new_dir = state is None and not claimed
    if new_dir:
        name = str(distributed.broadcast_object(runs.claim_run_dir(cfg.runs_dir, cfg.name).name if ctx.is_main
                                                else None))  # every rank uses rank 0's folder
        if name != cfg.name:
            echo(f"note: {cfg.run_dir} already holds a run; this one is {Path(cfg.runs_dir) / name}")
            cfg = dataclasses.replace(cfg, name=name)
    epoch = int(state["epoch"]) if state is not None else 0
    tracker = None
    try:
        if ctx.is_main:
            ensure_writable_dir(cfg.weights_dir)  # fail now, not after the first (possibly hour-long) epoch
            runs.write_status(cfg.run_dir, "running", epoch, cfg.epochs)
            tracker = tracked_run.start(cfg, echo, parent=tracking_parent)
        result = _fit(cfg, state, echo, ctx, data, leakage, tracker, tuple(on_epoch))
    except BaseException as exc:
        tracked_run.finish(tracker, cfg.run_dir, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
                           echo=echo)
        saved, epoch = (cfg.weights_dir / "last.pt").is_file(), runs.run_status(cfg.run_dir).get("epoch", epoch)
        if ctx.is_main and new_dir and not saved:  # a failed start leaves nothing behind
            shutil.rmtree(cfg.run_dir, ignore_errors=True)
        elif ctx.is_main:
            runs.write_status(cfg.run_dir, "interrupted", epoch, cfg.epochs)
        if isinstance(exc, KeyboardInterrupt):
            raise RunInterrupted(cfg.run_dir, int(epoch), cfg.epochs, saved, checkpoint_dir=cfg.checkpoint_dir or None,
                                 terminated=isinstance(exc, Terminated)) from None
        raise
    if ctx.is_main:
        runs.write_status(cfg.run_dir, "finished", result.epochs_run, cfg.epochs)
        tracked_run.finish(tracker, cfg.run_dir, "KILLED" if result.stopped else "FINISHED", {
            f"best_{SELECT_METRICS[cfg.select][0]}": result.best_metric, "best_epoch": result.best_epoch,
            "epochs_run": result.epochs_run}, echo=echo)
    return result


@dataclass
class _Session:
    """One training session: settings, data and what trains (:func:`_build`), passed from phase to phase."""

    cfg: TrainConfig
    data: LabeledData
    ctx: distributed.DistContext
    echo: Callable[[str], None]
    device: torch.device
    train_loader: Any
    val_loader: Any
    dtype: torch.dtype | None = None
    net: Any = None  # the bare ResNet50 (saved, validated); model: it or its DDP wrapper; train_model: compiled
    model: Any = None
    train_model: Any = None
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    criterion: Any = None
    saver: Any = None
    start_epoch: int = 0
    stale: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    leakage: dict[str, Any] | None = None  # the leakage check's record (data_checks), for config.json
    backbone: dict[str, Any] | None = None  # --weights FILE: its path, SHA-256 and card (config.json, checkpoints)
    tracker: Any = None  # the MLflow run (tracked_run) with --track, else None
    on_epoch: tuple[EpochCallback, ...] = ()
    stopped: bool = False


def _fit(cfg: TrainConfig, state: dict[str, Any] | None, echo, ctx: distributed.DistContext,
         data: LabeledData, leakage: dict[str, Any] | None, tracker: Any = None,
         on_epoch: tuple[EpochCallback, ...] = ()) -> TrainResult:
    seed_everything(cfg.seed + ctx.rank)  # rank 0 as alone; DDP copies rank 0's initial weights to all
    for note in data.notes:
        echo(f"note: {note}")
    device = distributed.local_device(resolve_device(cfg.device))
    threads = configure_threads(cfg.threads)
    train_loader, val_loader, skipped = load_data(cfg, data, Preprocessing.for_size(cfg.image_size), device)
    for path, problem in skipped[:10]:
        echo(f"skipped {path}: {problem}")
    if len(skipped) > 10:
        echo(f"... and {len(skipped) - 10} more skipped images")
    s = _Session(cfg, data, ctx, echo, device, train_loader, val_loader, leakage=leakage, tracker=tracker,
                 on_epoch=on_epoch)
    compile_note = _build(s, state)
    echo(f"threads: torch {threads} intra-op (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), "
         f"DataLoader workers {train_loader.num_workers}; torch.compile {compile_note}")
    precision = {torch.float16: "AMP fp16, ", torch.bfloat16: "AMP bf16, "}.get(s.dtype, "")  # type: ignore[arg-type]
    echo(f"training {ARCH} on {device} ({precision}{'channels_last' if cfg.channels_last else 'NCHW'}): "
         f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, classes {list(data.classes)}, "
         f"selecting by {s.saver.metric} ({s.saver.mode})"
         + (f"; {ctx.world_size} processes ({ctx.backend}), {cfg.batch_size // ctx.world_size} images per process "
            f"per step" if ctx.enabled else ""))
    echo(f"run folder {cfg.run_dir} (weights in {cfg.weights_dir})")
    epoch = _run_epochs(s)
    if s.saver.best_epoch < 0:
        raise SkinOnnxError(f"no epoch produced a usable {s.saver.metric}; nothing to keep")
    if ctx.is_main and not s.stopped:  # the others are done: rank 0 calibrates on the whole validation split alone
        full_val = val_loader if not ctx.enabled else make_loader(
            val_loader.dataset, batch_size=val_loader.batch_size, shuffle=False, workers=0, seed=cfg.seed,
            device=device)
        finalize_best(cfg.weights_dir / "best.pt", full_val, device, cfg, echo=echo)
    return TrainResult(cfg.weights_dir / "best.pt", cfg.weights_dir / "last.pt", cfg.run_dir, s.saver.best,
                       s.saver.best_epoch, epoch, s.history, skipped, list(val_loader.dataset.samples), s.stopped)


def _build(s: _Session, state: dict[str, Any] | None) -> str:
    """Model, optimiser, schedule, loss and saver (restored from ``state`` on --resume); config.json. Returns
    what torch.compile does and why."""
    cfg, data, device = s.cfg, s.data, s.device
    s.dtype = amp_dtype(device, cfg.amp)
    model = build_model(len(data.classes), cfg.weights if state is None else "none").to(device)
    s.net = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
    s.model = s.train_model = distributed.wrap_model(s.net, device, sync_bn=cfg.sync_bn)
    s.optimizer, s.saver = make_optimizer(cfg, s.net), CheckpointSaver(cfg.weights_dir, *SELECT_METRICS[cfg.select])
    s.scheduler = make_scheduler(cfg, s.optimizer)
    s.scaler = torch.amp.GradScaler("cuda", enabled=s.dtype == torch.float16)
    train_labels = [sample.label for sample in s.train_loader.dataset.samples]
    weights = auto_class_weights(train_labels, len(data.classes)) if cfg.class_weights == "auto" else None
    s.criterion = nn.CrossEntropyLoss(weight=None if weights is None
                                      else torch.tensor(weights, dtype=torch.float32, device=device),
                                      label_smoothing=cfg.label_smoothing)
    if state is not None:
        s.net.load_state_dict(state["model"])
        s.optimizer.load_state_dict(state["optimizer"])
        s.scheduler.load_state_dict(state["scheduler"])
        s.scaler.load_state_dict(state.get("scaler") or {})
        torch.set_rng_state(state["rng_state"])
        s.start_epoch, s.stale = int(state["epoch"]), int(state.get("stale_epochs", 0))
        s.saver.best, s.saver.best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        s.history = list(state.get("history", []))
        if s.ctx.rank:  # the saved RNG is rank 0's; the others draw their own augmentations
            torch.manual_seed(cfg.seed + s.ctx.rank + 1000 * int(state["epoch"]))
    if s.ctx.is_main:
        s.backbone = backbone_record(cfg.weights, cfg.fine_tune) if state is None else (
            runs.read_config(cfg.run_dir).get("backbone") or (state.get("config") or {}).get("backbone"))
        write_json(cfg.run_dir / "config.json", {
            **cfg.to_dict(), "skinonnx_version": __version__, "torch_version": torch.__version__,
            "device_used": str(device), "world_size": s.ctx.world_size, "classes": list(data.classes),
            "counts": data.counts(), "class_loss_weights": weights, "layout": data.layout,
            "preprocessing": Preprocessing.for_size(cfg.image_size).to_dict(), "leakage_check": s.leakage,
            "exclusions": data.exclusions, "backbone": s.backbone})
    if weights is not None or cfg.sampler == "balanced":
        shown = [f"loss weights {', '.join(f'{c} {w:.3f}' for c, w in zip(data.classes, weights, strict=True))}"
                 ] if weights else []
        s.echo("class imbalance: " + ", ".join(shown + (["class-balanced sampler"] if cfg.sampler == "balanced"
                                                         else [])))
    use_compile, note = decide(cfg.compile, device, (cfg.epochs - s.start_epoch) * len(s.train_loader),
                               cfg.batch_size, cfg.image_size)
    if use_compile:
        s.train_model = compiled_for_training(s.model, cfg.compile, batch_size=cfg.batch_size,
                                              image_size=cfg.image_size, device=device,
                                              channels_last=cfg.channels_last, dtype=s.dtype, echo=s.echo)
    return note


def _run_epochs(s: _Session) -> int:
    """The epoch loop: train, validate, step the schedule, save; returns the last epoch run. The training curves
    are drawn at most once every CURVES_EVERY_S and when the loop ends, however it ends."""
    cfg, metric = s.cfg, s.saver.metric
    epoch, epoch_seconds, drawn = s.start_epoch, [], time.monotonic()
    try:
        for epoch in range(s.start_epoch + 1, cfg.epochs + 1):
            t0 = time.perf_counter()
            row = _train_and_validate(s, epoch)
            improved = distributed.agree(s.saver.is_better(row[metric]), s.device)  # rank 0's call, on every rank
            s.stale = 0 if improved else s.stale + 1
            if not s.ctx.is_main:
                if improved:
                    s.saver.best, s.saver.best_epoch = row[metric], epoch
                if distributed.agree(False, s.device):
                    break
                continue
            _save_epoch(s, row, epoch)
            if time.monotonic() - drawn >= CURVES_EVERY_S:
                write_training_curves(cfg.run_dir, s.history, s.saver.best_epoch)
                drawn = time.monotonic()
            epoch_seconds.append(time.perf_counter() - t0)
            s.echo(f"epoch {epoch:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.3f}  "
                   f"val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.3f}  val_auc {row['val_auc']:.3f}  "
                   f"{row['train_images_per_s']:.1f} img/s{'  *best' if improved else ''}  "
                   f"{run_eta(epoch_seconds, cfg.epochs - epoch)}")
            tracked_run.log_epoch(s.tracker, row, epoch)
            if any([bool(callback(epoch, dict(row))) for callback in s.on_epoch]):  # every callback sees the epoch
                s.stopped = True
                s.echo(f"stopped after epoch {epoch} by the caller")
                break
            if distributed.agree(bool(cfg.early_stop and s.stale >= cfg.early_stop), s.device):
                s.echo(f"early stop: no {metric} improvement in {s.stale} epochs")
                break
    finally:
        if s.ctx.is_main and s.history:
            write_training_curves(cfg.run_dir, s.history, s.saver.best_epoch)
    return epoch


def _train_and_validate(s: _Session, epoch: int) -> dict[str, float]:
    """One epoch's training and validation, then the schedule's step; appends and returns its metrics row."""
    t0, amp = time.perf_counter(), s.dtype is not None
    row: dict[str, float] = {"epoch": epoch, "lr": s.optimizer.param_groups[0]["lr"]}
    head_only = s.cfg.fine_tune == "staged" and fine_tune.head_only(epoch, s.cfg.head_epochs)
    if s.cfg.fine_tune == "staged" and (epoch == s.start_epoch + 1 or epoch == s.cfg.head_epochs + 1):
        fine_tune.set_backbone_trainable(s.net, not head_only)
        s.echo(f"fine-tune (staged): the new head trains alone (backbone frozen) for {s.cfg.head_epochs} epoch(s)"
               if head_only else "fine-tune (staged): every layer trains now; learning rates: head --lr, layer3-4 "
               "a tenth, stem and layer1-2 a hundredth")
    if isinstance(s.train_loader.sampler, DistributedSampler):
        s.train_loader.sampler.set_epoch(epoch)  # the epoch's order: seed + epoch, the same on every rank
    row.update(train_one_epoch(s.train_model, s.train_loader, s.criterion, s.optimizer, s.device, scaler=s.scaler,
                               amp=amp, channels_last=s.cfg.channels_last, desc=f"epoch {epoch}/{s.cfg.epochs}",
                               progress=s.cfg.progress, freeze_bn=s.cfg.freeze_bn or head_only, dtype=s.dtype))
    logits, labels = validate_all(s.model, s.val_loader, s.device, amp=amp, channels_last=s.cfg.channels_last)
    row.update(validation_metrics(logits, labels, s.data.malignant_group()))
    row["epoch_seconds"] = time.perf_counter() - t0
    if isinstance(s.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        s.scheduler.step(row["val_loss"])
    else:
        s.scheduler.step()
    s.history.append(row)
    return row


def _save_epoch(s: _Session, row: dict[str, float], epoch: int) -> None:
    """last.pt (and best.pt when it improved), state.json and metrics.csv after an epoch (rank 0)."""
    s.saver.update({
        "arch": ARCH, "model": {k: v.detach().cpu().contiguous() for k, v in s.net.state_dict().items()},
        "classes": list(s.data.classes), "positive_index": s.data.positive_index, "malignant": list(s.data.malignant),
        "preprocessing": Preprocessing.for_size(s.cfg.image_size).to_dict(), "epoch": epoch,
        "metrics": {k: float(v) for k, v in row.items()}, "optimizer": s.optimizer.state_dict(),
        "scheduler": s.scheduler.state_dict(), "scaler": s.scaler.state_dict(), "rng_state": torch.get_rng_state(),
        "stale_epochs": s.stale, "history": s.history,
        "config": {**s.cfg.to_dict(), "exclusions": s.data.exclusions,  # export, test, quantize leave them out
                   "backbone": s.backbone},
        "data_root": str(Path(s.cfg.data).resolve()), "skinonnx_version": __version__,
    }, row[s.saver.metric], epoch)
    runs.write_status(s.cfg.run_dir, "running", epoch, s.cfg.epochs)
    _write_metrics_csv(s.cfg.run_dir / "metrics.csv", s.history)
