"""Fine-tuning: one function per phase (load_data, train_one_epoch, fit); evaluate lives in validate.py."""

from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .. import __version__
from ..atomic import ensure_writable_dir, write_json, write_text
from ..data.layouts import LabeledData, Sample, discover
from ..data.preprocessing import Preprocessing
from ..errors import CheckpointError, DataError, SkinOnnxError
from .checkpoint import RESUME_KEYS, CheckpointSaver, load_checkpoint, require_keys
from .config import SELECT_METRICS, TrainConfig, resumed_config
from .device import autocast, resolve_device, seed_everything
from .finalize import finalize_best
from .loaders import ImageCache, LesionDataset, default_workers, make_loader
from .model import ARCH, build_model
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


def load_data(cfg: TrainConfig, data: LabeledData, prep: Preprocessing, device: torch.device):
    """DataLoaders for train (augmented, shuffled) and val (the shared eval preprocessing)."""
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
    train_loader = make_loader(LesionDataset(train_samples, cache, train=True), batch_size=cfg.batch_size,
                               shuffle=True, workers=workers, seed=cfg.seed, device=device)
    val_loader = make_loader(LesionDataset(val_samples, cache, train=False), batch_size=cfg.batch_size,
                             shuffle=False, workers=workers, seed=cfg.seed, device=device)
    return train_loader, val_loader, skipped


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    raise SkinOnnxError(f"unknown optimizer '{cfg.optimizer}' (adamw, sgd)")


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.scheduler == "plateau":  # the original project's: factor 0.2 on a stalled val loss
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.2, patience=2)
    if cfg.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.epochs))
    raise SkinOnnxError(f"unknown scheduler '{cfg.scheduler}' (plateau, cosine)")


def train_step(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
               optimizer: torch.optim.Optimizer, device: torch.device, *, scaler: torch.amp.GradScaler, amp: bool,
               channels_last: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimisation step on one batch; returns detached (loss, logits, targets on the device)."""
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = targets.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
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
                    desc: str = "train", progress: bool = True) -> dict[str, float]:
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False)
    for images, targets in bar:
        loss, logits, targets = train_step(model, images, targets, criterion, optimizer, device, scaler=scaler,
                                           amp=amp, channels_last=channels_last)
        n = targets.numel()
        total_loss += loss.item() * n
        correct += (logits.argmax(1) == targets).sum().item()
        seen += n
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", img_s=f"{seen / (time.perf_counter() - start):.1f}")
    elapsed = time.perf_counter() - start
    return {"train_loss": total_loss / max(seen, 1), "train_acc": correct / max(seen, 1),
            "train_images_per_s": seen / elapsed if elapsed > 0 else 0.0}


def _write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, buf.getvalue())


def fit(cfg: TrainConfig, *, resume: bool = False, explicit: frozenset[str] | set[str] = frozenset(),
        echo=print, data: LabeledData | None = None) -> TrainResult:
    """Train, keeping best.pt (by the selection metric) and last.pt (every epoch, for --resume).

    ``explicit``: the settings the user gave on this call; with ``resume`` only those in
    :data:`RESUME_OVERRIDES` may differ from the saved run. ``data``: train/val splits to use
    instead of discovering ``cfg.data`` (cross-validation passes each fold's).
    """
    ckpt_dir = Path(cfg.checkpoint_dir)
    state: dict[str, Any] | None = None
    if resume:
        state = load_checkpoint(ckpt_dir / "last.pt")
        require_keys(state, RESUME_KEYS, ckpt_dir / "last.pt", "--resume")
        cfg = resumed_config(state.get("config") or {}, cfg, {*explicit, "checkpoint_dir"}, ckpt_dir / "last.pt")
        echo(f"resuming run '{cfg.name}' from {ckpt_dir / 'last.pt'} (epoch {state['epoch']} of {cfg.epochs})")
        if int(state["epoch"]) >= cfg.epochs:
            echo(f"note: the run already completed {state['epoch']} epochs; pass a larger --epochs to train on")
    ensure_writable_dir(ckpt_dir)  # fail now, not after the first (possibly hour-long) epoch
    ensure_writable_dir(cfg.run_dir)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if data is None:
        data = discover(cfg.data, positive_class=cfg.positive_class, seed=cfg.seed)
    for note in data.notes:
        echo(f"note: {note}")
    if state is not None and tuple(state["classes"]) != data.classes:
        raise CheckpointError(f"checkpoint classes {state['classes']} differ from the data's {list(data.classes)}")
    prep = Preprocessing.for_size(cfg.image_size)
    amp = cfg.amp and device.type == "cuda"
    channels_last = cfg.channels_last
    train_loader, val_loader, skipped = load_data(cfg, data, prep, device)
    for path, problem in skipped[:10]:
        echo(f"skipped {path}: {problem}")
    if len(skipped) > 10:
        echo(f"... and {len(skipped) - 10} more skipped images")

    model = build_model(len(data.classes), cfg.weights if state is None else "none").to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    metric_name, mode = SELECT_METRICS[cfg.select]
    saver = CheckpointSaver(ckpt_dir, metric_name, mode)
    history: list[dict[str, float]] = []
    start_epoch, stale = 0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state.get("scaler") or {})
        torch.set_rng_state(state["rng_state"])
        start_epoch, stale = int(state["epoch"]), int(state.get("stale_epochs", 0))
        saver.best, saver.best_epoch = float(state["best_metric"]), int(state["best_epoch"])
        history = list(state.get("history", []))

    run_dir = cfg.run_dir
    write_json(run_dir / "config.json", {**cfg.to_dict(), "skinonnx_version": __version__,
                                         "torch_version": torch.__version__, "device_used": str(device),
                                         "classes": list(data.classes), "counts": data.counts(),
                                         "layout": data.layout, "preprocessing": prep.to_dict()})
    criterion = nn.CrossEntropyLoss()
    echo(f"training {ARCH} on {device} ({'AMP fp16, ' if amp else ''}{'channels_last' if channels_last else 'NCHW'}): "
         f"{len(train_loader.dataset)} train / {len(val_loader.dataset)} val images, classes {list(data.classes)}, "
         f"selecting by {metric_name} ({mode})")
    epoch = start_epoch
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        row: dict[str, float] = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"]}
        row.update(train_one_epoch(model, train_loader, criterion, optimizer, device, scaler=scaler, amp=amp,
                                   channels_last=channels_last, desc=f"epoch {epoch}/{cfg.epochs}",
                                   progress=cfg.progress))
        logits, labels = evaluate(model, val_loader, device, amp=amp, channels_last=channels_last)
        row.update(validation_metrics(logits, labels, data.positive_index))
        row["epoch_seconds"] = time.perf_counter() - t0
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(row["val_loss"])
        else:
            scheduler.step()
        history.append(row)
        value = row[metric_name]
        improved = saver.is_better(value)
        stale = 0 if improved else stale + 1
        checkpoint_state = {
            "arch": ARCH, "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
            "classes": list(data.classes), "positive_index": data.positive_index,
            "preprocessing": prep.to_dict(), "epoch": epoch, "metrics": {k: float(v) for k, v in row.items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng_state": torch.get_rng_state(), "stale_epochs": stale,
            "history": history, "config": cfg.to_dict(), "data_root": str(Path(cfg.data).resolve()),
            "skinonnx_version": __version__,
        }
        saver.update(checkpoint_state, value, epoch)
        _write_metrics_csv(run_dir / "metrics.csv", history)
        echo(f"epoch {epoch:>3}/{cfg.epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.3f}  "
             f"val_loss {row['val_loss']:.4f}  val_acc {row['val_acc']:.3f}  val_auc {row['val_auc']:.3f}  "
             f"{row['train_images_per_s']:.1f} img/s{'  *best' if improved else ''}")
        if cfg.early_stop and stale >= cfg.early_stop:
            echo(f"early stop: no {metric_name} improvement in {stale} epochs")
            break
    if saver.best_epoch < 0:
        raise SkinOnnxError(f"no epoch produced a usable {metric_name}; nothing to keep")
    finalize_best(ckpt_dir / "best.pt", val_loader, device, cfg, echo=echo)
    return TrainResult(ckpt_dir / "best.pt", ckpt_dir / "last.pt", run_dir, saver.best, saver.best_epoch,
                       epoch, history, skipped, list(val_loader.dataset.samples))
