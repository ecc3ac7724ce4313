"""Checkpoints: model weights plus plain data only, saved atomically, loaded with weights_only=True."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_path
from ..errors import CheckpointError
from .model import build_model
from .torch_load import safe_torch_load

FORMAT = "skinonnx-checkpoint"
FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "classes", "positive_index", "preprocessing", "epoch")
RESUME_KEYS = ("optimizer", "scheduler", "rng_state", "config", "best_metric", "best_epoch")
# Only last.pt carries these: best.pt is what export and explain need (weights, classes, preprocessing, ...),
# about a third of last.pt's size with AdamW (whose state is two more copies of the weights).
RESUME_ONLY_KEYS = ("optimizer", "scheduler", "scaler", "rng_state", "stale_epochs")


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Save atomically: a kill at any moment leaves the previous or the new file, never half of one."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, tmp)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's plain data (two or more classes)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (run `skinonnx train` first, or pass --checkpoint)")
    state = safe_torch_load(path, "a checkpoint")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a skinonnx checkpoint (no '{FORMAT}' marker)")
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {state.get('format_version')} is not supported")
    require_keys(state, REQUIRED_KEYS, path, "a model")
    if not isinstance(state["model"], dict) or len(state["classes"]) < 2:
        raise CheckpointError(f"{path}: damaged checkpoint (weights or the two class names are missing)")
    return state


def malignant_group(state: dict[str, Any]) -> tuple[int, ...]:
    """The malignancy group's class indices: the checkpoint's ``malignant``, else (older, two-class checkpoints)
    its positive class."""
    group = state.get("malignant")
    return tuple(int(i) for i in group) if group else (int(state["positive_index"]),)


def require_keys(state: dict[str, Any], keys: tuple[str, ...], path: str | os.PathLike[str], purpose: str) -> None:
    missing = [k for k in keys if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}, needed for {purpose}")


def model_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    model = build_model(len(state["classes"]), weights="none")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint weights do not fit ResNet50: {str(exc).splitlines()[0]}") from None
    return model.eval()


@dataclass
class CheckpointSaver:
    """Keeps ``best.pt`` by a metric that knows its direction, and ``last.pt`` every epoch."""

    directory: Path
    metric: str
    mode: str = "max"  # "max" for AUC/accuracy, "min" for loss
    best: float = math.nan
    best_epoch: int = -1

    def is_better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if math.isnan(self.best):
            return True
        return value > self.best if self.mode == "max" else value < self.best

    def update(self, state: dict[str, Any], value: float, epoch: int) -> bool:
        improved = self.is_better(value)
        if improved:
            self.best, self.best_epoch = value, epoch
        full = {**state, "best_metric": self.best, "best_epoch": self.best_epoch}
        if improved:
            save_checkpoint({k: v for k, v in full.items() if k not in RESUME_ONLY_KEYS}, self.directory / "best.pt")
        save_checkpoint(full, self.directory / "last.pt")  # last: resume always continues from here
        return improved
