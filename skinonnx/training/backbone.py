"""`pretrain`'s output: a finished run's weights as a backbone file (ResNet50 state dict without its ``fc`` head,
written atomically, loaded with ``torch.load(weights_only=True)``), its card (``X.card.json``) and the
fingerprints of the images it was trained on (``X.images.json``, for `train`'s leakage check).

The card says what the weights are: data, classes, image size, epochs, validation balanced accuracy and per-class
AUC (recomputed from best.pt's validation predictions, calibrated, with its class bias), the data's licence
(which the weights inherit: HAM10000 is CC BY-NC 4.0, so its backbone is for non-commercial research) and the
file's SHA-256.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from .. import __version__
from ..atomic import atomic_path, write_json
from ..data.pretraining import CARD_FORMAT, FORMAT_VERSION, card_path, fingerprint_seen, images_path, write_images
from ..errors import CheckpointError, DataError
from ..evaluation.class_bias import biased_decision, log_probabilities
from ..evaluation.multiclass_metrics import multiclass_metrics
from ..hashing import file_sha256
from . import runs
from .checkpoint import load_checkpoint
from .config import RECORDED_ONLY, TrainConfig
from .data_checks import discovered
from .model import ARCH, backbone_weights

_LICENCE = re.compile(r"licen[cs]e[:\s]+(CC0[^.;,()\n]*|CC[- ]BY[^;()\n]*?\d\.\d|[A-Z][\w.-]*-\d\.\d)", re.I)


def data_licence(data_path: str | Path) -> str:
    """The licence named in the data's README.md (the folder, or the index CSV's folder), else 'unknown'."""
    folder = Path(data_path) if Path(data_path).is_dir() else Path(data_path).parent
    try:
        found = _LICENCE.search(" ".join((folder / "README.md").read_text(encoding="utf-8").split()))
    except OSError:
        return "unknown (no README.md beside the data; pass --licence)"
    return found.group(1).strip() if found else "unknown (the data's README.md names none; pass --licence)"


def terms_of_use(licence: str) -> str:
    """What the weights may be used for, as the data's licence allows."""
    if re.search(r"\bNC\b|non-?commercial", licence, re.I):
        return "non-commercial research only: the weights derive from data licensed " + licence
    if licence.startswith("unknown"):
        return "unknown: check the pretraining data's terms before any use"
    return f"as the pretraining data's licence ({licence}) allows; research, not clinical use"


def _validation(best: dict[str, Any]) -> dict[str, Any]:
    """Balanced accuracy and per-class AUC on validation, from best.pt's calibrated predictions and class bias."""
    preds = best.get("val_predictions") or {}
    if "logits" not in preds or "labels" not in preds:
        raise CheckpointError("best.pt has no validation predictions: its run did not finish (calibration runs "
                              "after the last epoch); resume it with `train --resume RUN` first")
    logits, labels = np.asarray(preds["logits"], np.float64), np.asarray(preds["labels"], np.int64)
    temperature = float((best.get("calibration") or {}).get("temperature", 1.0))
    offsets = np.asarray((best.get("class_bias") or {}).get("offsets") or [0.0] * logits.shape[1], np.float64)
    log_p = log_probabilities(logits, temperature)
    metrics = multiclass_metrics(labels, np.exp(log_p), biased_decision(log_p, offsets), list(best["classes"]))
    return {"n": metrics["n"], "balanced_accuracy": metrics["balanced_accuracy"], "macro_auc": metrics["macro_auc"],
            "per_class_auc": {c: v["auc"] for c, v in metrics["per_class"].items()},
            "accuracy": metrics["accuracy"], "epoch": int(best["epoch"]),
            "decision": "argmax + class bias" if offsets.any() else "argmax"}


def _run_config(run_dir: Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's settings, and its config.json as recorded (counts, ...)."""
    config = runs.read_config(run_dir)
    if not config:
        raise CheckpointError(f"{run_dir}: no readable config.json: not a skinonnx training run")
    names = set(TrainConfig.__dataclass_fields__)
    settings = {k: v for k, v in config.items() if k in names and k not in RECORDED_ONLY}
    return TrainConfig(**{**settings, "progress": False}), config


def write_backbone(run_dir: str | Path, output: str | Path, *, licence: str = "", progress: bool = True,
                   echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The backbone, images file and card of a finished run (``run_dir``); returns the card."""
    run_dir, output = Path(run_dir), Path(output)
    if runs.is_cv_run(run_dir):
        raise DataError(f"{run_dir}: a cross-validation run has one model per fold; `pretrain --from-run` takes a "
                        "single run")
    status = runs.run_status(run_dir).get("status")
    if status in ("running", "interrupted"):
        raise DataError(f"{run_dir}: the run is {runs.unfinished(run_dir)}; wait for it to finish (or resume it) "
                        "before making a backbone of it")
    cfg, recorded_config = _run_config(run_dir)
    best_path = cfg.weights_dir / "best.pt" if cfg.checkpoint_dir else runs.weights_dir(run_dir) / "best.pt"
    best = load_checkpoint(best_path)
    if best.get("arch", ARCH) != ARCH:
        raise CheckpointError(f"{best_path}: a {best.get('arch')} model; backbones are {ARCH}")
    validation = _validation(best)
    weights = backbone_weights(best["model"], best_path)
    if not Path(cfg.data).exists() and best.get("data_root") and Path(best["data_root"]).exists():
        cfg = dataclasses.replace(cfg, data=str(best["data_root"]))  # config.json's path was relative to elsewhere
    data = discovered(cfg)
    recorded = recorded_config.get("counts") or {}
    now = data.counts()
    for split in ("train", "val"):
        if recorded.get(split) and recorded[split] != now.get(split):
            raise DataError(f"{cfg.data}: its {split} split is not what run {run_dir.name} trained on (now "
                            f"{now.get(split)}, then {recorded[split]}): the pretraining images cannot be listed")
    n_seen = sum(len(data.splits.get(s, [])) for s in ("train", "val"))
    with tqdm(total=n_seen, desc="fingerprint pretraining images", unit="img", disable=not progress,
              leave=False) as bar:
        images = fingerprint_seen(data, max_pixels=cfg.max_pixels, progress=bar.update)
    with atomic_path(output) as tmp:
        torch.save(weights, tmp)
    images_sha = write_images(images_path(output), images)
    used = licence or data_licence(cfg.data)
    card = {
        "format": CARD_FORMAT, "format_version": FORMAT_VERSION, "arch": ARCH, "file": output.name,
        "sha256": file_sha256(output), "size_bytes": output.stat().st_size, "head": "removed (fc): train adds its own",
        "data": {"path": str(Path(cfg.data).resolve()), "layout": data.layout, "counts": now,
                 "group_column": cfg.group_column, "exclusions": data.exclusions},
        "classes": list(best["classes"]), "malignant": [best["classes"][i] for i in best.get("malignant") or []],
        "image_size": cfg.image_size, "preprocessing": best["preprocessing"], "epochs": cfg.epochs,
        "epochs_run": int(runs.run_status(run_dir).get("epoch") or best["epoch"]), "best_epoch": int(best["epoch"]),
        "settings": {k: getattr(cfg, k) for k in ("weights", "lr", "batch_size", "optimizer", "scheduler", "sampler",
                                                   "class_weights", "class_bias", "augment_strength", "seed")},
        "validation": validation, "licence": used, "use": terms_of_use(used),
        "images_file": images_path(output).name, "images_sha256": images_sha,
        "pretraining_images": len(images["images"]), "pretraining_splits": images["splits"],
        "made_from": {"run": str(run_dir.resolve()), "checkpoint_sha256": file_sha256(best_path)},
        "skinonnx_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(card_path(output), card)
    echo(f"backbone {output} ({card['size_bytes'] / 1e6:.0f} MB, SHA-256 {card['sha256'][:16]}...): {ARCH} from "
         f"run {run_dir.name}, {len(card['classes'])} classes at {cfg.image_size} px, validation balanced accuracy "
         f"{validation['balanced_accuracy']:.3f}, macro AUC {validation['macro_auc']:.3f}; licence {used}")
    echo(f"card {card_path(output)}; pretraining images {images_path(output)} ({len(images['images'])} images, "
         "for the leakage check)")
    return card
