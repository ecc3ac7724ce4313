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
CLASS_WEIGHTS = ("none", "auto")
SAMPLERS = ("shuffle", "balanced")

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
    augment: bool = True  # False: centre crops only, deterministic (the DDP == one-process check uses it)
    freeze_bn: bool = False  # BatchNorm keeps its running statistics; only its scale/shift train
    sync_bn: bool = False  # SyncBatchNorm across torchrun processes (CUDA only)
    cache_mb: int = 2048
    max_pixels: int = DEFAULT_MAX_PIXELS
    class_weights: str = "none"  # "auto": loss weights n / (k * n_class) from the training split
    sampler: str = "shuffle"  # "balanced": draw each class equally often (with replacement)
    checkpoint_dir: str = ""  # "" = RUN/weights (runs/<name>/weights); a folder here keeps the weights apart
    runs_dir: str = "runs"
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            self.name = time.strftime("%Y%m%d-%H%M%S")
        if self.select not in SELECT_METRICS:
            raise SkinOnnxError(f"--select must be one of {sorted(SELECT_METRICS)}")
        if self.class_weights not in CLASS_WEIGHTS:
            raise SkinOnnxError(f"--class-weights must be one of {', '.join(CLASS_WEIGHTS)}")
        if self.sampler not in SAMPLERS:
            raise SkinOnnxError(f"--sampler must be one of {', '.join(SAMPLERS)}")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def weights_dir(self) -> Path:
        """Where best.pt and last.pt go: the run's own weights/ folder unless --checkpoint-dir moved them."""
        return Path(self.checkpoint_dir) if self.checkpoint_dir else self.run_dir / "weights"

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
                            "(another --name)")
    if "epochs" in given and given["epochs"] != saved.get("epochs") and saved.get("scheduler") == "cosine":
        raise SkinOnnxError(f"--epochs cannot change on --resume with the cosine schedule: its learning rate "
                            f"was laid out over {saved.get('epochs')} epochs. Resume without --epochs, or "
                            "start a new run")
    overrides = {name: value for name, value in given.items() if name in RESUME_OVERRIDES}
    try:
        return TrainConfig(**{**saved, **overrides, "progress": cfg.progress})
    except TypeError as exc:
        raise CheckpointError(f"{where}: its saved settings do not fit this skinonnx ({exc})") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Settings from a JSON or YAML file (e.g. a run's own config.json), as a flat mapping."""
    import json

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SkinOnnxError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SkinOnnxError(f"--config {path}: YAML needs PyYAML (pip install pyyaml), or pass JSON") from None
        try:
            settings = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SkinOnnxError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        try:
            settings = json.loads(text)
        except ValueError as exc:
            raise SkinOnnxError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(settings, dict):
        raise SkinOnnxError(f"--config {path}: expected a mapping of setting: value at the top level")
    return settings
