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
CLASS_BIAS = ("none", "val", "oof")
FINE_TUNE = ("auto", "staged", "plain")

SECTIONS = ("data", "model", "optimisation", "evaluation", "run", "speed", "distributed")


def setting(default: Any, help: str = "", *, section: str, option: str = "", choices: tuple[str, ...] = (),
            low: float | None = None, high: float | None = None, open_low: bool = False, resumable: bool = False):
    """A TrainConfig field and its `train` option: ``option`` (default ``--<field>``; ``--no-x``/``--quiet`` for
    a negated flag), help, --help section, allowed values, and whether ``--resume`` may change it."""
    return dataclasses.field(default=default, metadata={
        "option": option, "help": help, "section": section, "choices": choices, "range": (low, high, open_low),
        "resumable": resumable})


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as plain JSON in runs/<name>/config.json and in checkpoints.

    Each field's metadata (see :func:`setting`) generates its `train` option, help and resume rule."""

    data: str = setting("data/synthetic", "Data folder (split or flat ImageFolder) or index CSV (path,label,split).",
                        section="data", resumable=True)
    name: str = setting("", "Run name: the run lives in RUNS_DIR/NAME/ (default: a time stamp; a taken name gets -2, "
                        "-3...).", section="run")
    weights: str = setting("imagenet", "'imagenet' (torchvision), 'none' (random init) or a path to a ResNet50 state "
                           "dict: a `pretrain` backbone (its card is recorded and the data checked against its "
                           "pretraining images), a plain state dict or a skinonnx checkpoint.", section="model")
    fine_tune: str = setting("auto", "How pretrained weights are fine-tuned. staged: the new head alone (backbone "
                             "frozen) for --head-epochs, then every layer, the early ones at lower learning rates "
                             "(fastai's fine_tune); plain: every layer at --lr from the start; auto: staged unless "
                             "--weights none (where staged is refused) or --epochs leaves no epoch after the head's.",
                             section="model", choices=FINE_TUNE)
    head_epochs: int = setting(1, "With --fine-tune staged: epochs that train the new head alone before the backbone "
                               "unfreezes (part of --epochs).", section="model", low=1)
    epochs: int = setting(15, section="optimisation", low=1, resumable=True)
    batch_size: int = setting(16, "Global batch per optimizer step. Under torchrun it is split evenly among the "
                              "processes (each takes batch-size / world size), so the same value trains the same way "
                              "at any scale.", section="optimisation", low=1)
    lr: float = setting(3e-4, section="optimisation", low=0, open_low=True)
    weight_decay: float = setting(1e-4, section="optimisation", low=0)
    optimizer: str = setting("adamw", section="optimisation", choices=("adamw", "sgd"))
    scheduler: str = setting("plateau", section="optimisation", choices=("plateau", "cosine"))
    early_stop: int = setting(6, "Stop after this many epochs without improvement (0: never).",
                              section="optimisation", low=0, resumable=True)
    image_size: int = setting(224, section="model", low=32, high=1024)
    select: str = setting("auc", "Validation metric that picks best.pt.", section="evaluation",
                          choices=tuple(SELECT_METRICS))
    threshold_policy: str = setting("youden", "Operating point chosen on validation: youden, sensitivity:0.95 or "
                                    "fixed:0.5.", section="evaluation")
    calibrate: bool = setting(True, "Skip temperature scaling.", section="evaluation", option="--no-calibrate")
    positive_class: str | None = setting(None, "Class counted as positive (default: malignant).", section="data")
    group_column: str = setting("group", "The index CSV's column of patient or lesion ids (e.g. lesion_id): a "
                                "group's images stay in one split and one fold.", section="data")
    malignant: str = setting("", "The malignancy group, comma-separated classes (e.g. mel,bcc,akiec): its summed "
                             "probability is the malignancy score, with its own threshold. Needed for more than two "
                             "classes; for two it is the positive class.", section="data")
    class_bias: str = setting("none", "The diagnosis decision: none (argmax); val or oof: per-class offsets on the "
                              "log-probabilities tuned on the validation split, or on the out-of-fold predictions "
                              "of --folds, to maximise balanced accuracy.", section="evaluation", choices=CLASS_BIAS)
    exclude_list: str = setting("", "Leave out the images listed in FILE (one path per line, relative to the data "
                                "root; `audit` writes one).", section="data")
    allow_leakage: bool = setting(False, "Train even when validation or test images duplicate training images, or "
                                  "with --weights BACKBONE images it was pretrained on (refused otherwise); the "
                                  "pairs are recorded in config.json and the model card.",
                                  section="data")
    seed: int = setting(0, section="run")
    device: str = setting("auto", section="speed", choices=("auto", "cpu", "cuda"), resumable=True)
    workers: int | None = setting(None, "DataLoader workers (default: auto).", section="speed", low=0, resumable=True)
    threads: int | None = setting(None, "CPU threads for the model (default: the physical cores this process may "
                                  "use; lower it when other jobs share the CPU).", section="speed", low=1,
                                  resumable=True)
    compile: str = setting("auto", "torch.compile the training step; auto: when the run is long enough to repay the "
                           "compile time.", section="speed", choices=("auto", "on", "off"), resumable=True)
    amp: bool = setting(True, "Disable mixed precision (fp16 on CUDA; bf16 on CPUs with AVX512-BF16/AMX).",
                        section="speed", option="--no-amp")
    channels_last: bool = setting(True, "Keep NCHW memory format.", section="speed", option="--no-channels-last")
    augment_strength: float = setting(1.0, "Scale of the training augmentation's random crop and colour changes "
                                      "(0: flips and right-angle turns only; 1: the default; up to 2).",
                                      section="optimisation", low=0, high=2)
    label_smoothing: float = setting(0.0, "Cross-entropy label smoothing (0: none).", section="optimisation", low=0,
                                     high=0.5)
    augment: bool = setting(True, "Train on the centre crop only (deterministic; e.g. to check torchrun against one "
                            "process).", section="optimisation", option="--no-augment")
    freeze_bn: bool = setting(False, "BatchNorm keeps its running statistics (e.g. ImageNet's); only its scale and "
                              "shift train. Makes results independent of the per-process batch.", section="model")
    sync_bn: bool = setting(False, "Under torchrun on CUDA: BatchNorm statistics over the global batch "
                            "(SyncBatchNorm); refused elsewhere.", section="distributed")
    cache_mb: int = setting(2048, "Memory for decoded training images; the rest streams from disk.", section="speed",
                            low=0, resumable=True)
    max_pixels: int = setting(DEFAULT_MAX_PIXELS, "Refuse images with more pixels than this (decompression-bomb "
                              "guard).", section="data", low=1, resumable=True)
    class_weights: str = setting("none", "auto: weight the loss by n / (K n_class) from the training split (for "
                                 "imbalanced data).", section="optimisation", choices=CLASS_WEIGHTS)
    sampler: str = setting("shuffle", "balanced: draw every class equally often per epoch (with replacement).",
                           section="optimisation", choices=SAMPLERS)
    checkpoint_dir: str = setting("", "Keep best.pt/last.pt here instead of the run's weights/ folder.",
                                  section="run", resumable=True)
    runs_dir: str = setting("runs", "Folder holding the run folders.", section="run", resumable=True)
    track: bool = setting(False, "Log settings, every epoch's metrics, curves and config to MLflow "
                          "(docs/TRACKING.md; opt-in: importing MLflow and creating its store cost ~30 s of CPU). "
                          "Default store: RUNS_DIR/mlflow.db.",
                          section="run", resumable=True)
    tracking_uri: str = setting("", "MLflow tracking URI (a server, databricks, sqlite:///FILE); implies --track "
                                "(default: MLFLOW_TRACKING_URI, else sqlite:///RUNS_DIR/mlflow.db).", section="run",
                                resumable=True)
    progress: bool = setting(True, "No progress bars.", section="run", option="--quiet", resumable=True)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = time.strftime("%Y%m%d-%H%M%S")
        for f in dataclasses.fields(self):  # the CLI checks these too; a TrainConfig built in code is checked here
            if f.metadata["choices"] and getattr(self, f.name) not in f.metadata["choices"]:
                raise SkinOnnxError(f"--{f.name.replace('_', '-')} must be one of {', '.join(f.metadata['choices'])}")
        if self.fine_tune == "auto":  # resolved once, so config.json says what the run did
            self.fine_tune = "plain" if self.weights == "none" or self.epochs <= self.head_epochs else "staged"
        if self.fine_tune == "staged" and self.weights == "none":
            raise SkinOnnxError("--fine-tune staged trains a new head on pretrained weights first: with --weights "
                                "none (random init) there is nothing to keep; use --fine-tune plain (or auto)")
        if self.fine_tune == "staged" and self.epochs <= self.head_epochs:
            raise SkinOnnxError(f"--fine-tune staged trains the head alone for --head-epochs {self.head_epochs}, "
                                f"then every layer: --epochs {self.epochs} leaves no epoch for the second stage "
                                "(raise --epochs, or --fine-tune plain)")

    def check_class_bias(self, cross_validation: bool) -> None:
        """--class-bias oof needs --folds (out-of-fold predictions); with --folds the offsets are tuned on them."""
        if self.class_bias == "oof" and not cross_validation:
            raise SkinOnnxError("--class-bias oof tunes on out-of-fold predictions: it needs --folds K "
                                "(or use --class-bias val)")
        if self.class_bias == "val" and cross_validation:
            raise SkinOnnxError("with --folds use --class-bias oof: the offsets are tuned on the pooled out-of-fold "
                                "predictions that the ensemble's metrics come from")

    @property
    def tracked(self) -> bool:
        """--track, or a --tracking-uri (which implies it)."""
        return self.track or bool(self.tracking_uri)

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def weights_dir(self) -> Path:
        """Where best.pt and last.pt go: the run's own weights/ folder unless --checkpoint-dir moved them."""
        return Path(self.checkpoint_dir) if self.checkpoint_dir else self.run_dir / "weights"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# What a run records in config.json besides its settings (loop.py): --config reads them back without a note.
RECORDED_ONLY = frozenset({"skinonnx_version", "torch_version", "device_used", "world_size", "classes", "counts",
                           "class_loss_weights", "layout", "preprocessing", "leakage_check",
                           "exclusions", "backbone"})
# Settings a resumed run may take from the command line: where things are and how fast they run, plus the epoch
# budget and patience (``resumable`` in their metadata). Everything else (lr, image size, ...) defines the run itself.
RESUME_OVERRIDES = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["resumable"])


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
        settings = {k: v for k, v in saved.items() if k not in RECORDED_ONLY}  # a checkpoint's config records some
        return TrainConfig(**{**settings, **overrides, "progress": cfg.progress})
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
