"""Training settings: one dataclass, saved as plain JSON (never a pickled namespace), and the resume rules."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.images import DEFAULT_MAX_PIXELS
from ..errors import CheckpointError, SkinOnnxError

SELECT_METRICS = {"auc": ("val_auc", "max"), "acc": ("val_acc", "max"), "loss": ("val_loss", "min")}



@dataclass
class TrainConfig:
    """Everything a run depends on; saved as plain JSON in runs/<name>/config.json and in checkpoints."""

    data: str = "data/synthetic"
    name: str = ""
    weights: str = "imagenet"
    epochs: int = 15
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    scheduler: str = "plateau"
    early_stop: int = 6
    image_size: int = 224
    select: str = "auc"
    threshold_policy: str = "youden"
    calibrate: bool = True
    positive_class: str | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    threads: int | None = None  # torch intra-op threads; None: the physical cores this process may use
    compile: str = "auto"  # torch.compile: auto (when it repays its compile time), on, off
    amp: bool = True  # fp16 autocast on CUDA, bf16 on CPUs with a bf16 unit
    channels_last: bool = True
    cache_mb: int = 2048
    max_pixels: int = DEFAULT_MAX_PIXELS
    checkpoint_dir: str = "checkpoints"
    runs_dir: str = "runs"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            self.name = time.strftime("%Y%m%d-%H%M%S")
        if self.select not in SELECT_METRICS:
            raise SkinOnnxError(f"--select must be one of {sorted(SELECT_METRICS)}")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Settings a resumed run may take from the command line: where things are and how fast they run,
# plus the epoch budget and patience. Everything else (lr, image size, ...) defines the run itself.
RESUME_OVERRIDES = frozenset({"epochs", "early_stop", "data", "device", "workers", "cache_mb", "max_pixels",
                              "checkpoint_dir", "runs_dir", "progress", "threads", "compile"})


def resumed_config(saved: dict[str, Any], cfg: TrainConfig, explicit: frozenset[str] | set[str],
                   where: Path) -> TrainConfig:
    """The saved run's settings, with the explicitly given ones that may change on resume.

    An explicitly given setting that would change the run itself is an error, not silently ignored.
    """
    given = {name: getattr(cfg, name) for name in explicit if hasattr(cfg, name)}
    changed = sorted(name for name, value in given.items()
                     if name not in RESUME_OVERRIDES and name in saved and saved[name] != value)
    if changed:
        listing = ", ".join(f"--{name.replace('_', '-')} (run: {saved[name]!r}, given: {given[name]!r})"
                            for name in changed)
        raise SkinOnnxError(f"--resume continues run '{saved.get('name', '?')}' with its saved settings; "
                            f"{listing} would change the run itself. Drop the option, or start a new run "
                            "(another --checkpoint-dir)")
    if "epochs" in given and given["epochs"] != saved.get("epochs") and saved.get("scheduler") == "cosine":
        raise SkinOnnxError(f"--epochs cannot change on --resume with the cosine schedule: its learning rate "
                            f"was laid out over {saved.get('epochs')} epochs. Resume without --epochs, or "
                            "start a new run")
    overrides = {name: value for name, value in given.items() if name in RESUME_OVERRIDES}
    try:
        return TrainConfig(**{**saved, **overrides, "progress": cfg.progress})
    except TypeError as exc:
        raise CheckpointError(f"{where}: its saved settings do not fit this skinonnx ({exc})") from None
