"""The data a run trains on: discovered, minus ``--exclude-list``, and checked for train/test leakage first.
What was excluded travels with the data (``LabeledData.exclusions``) into config.json and the checkpoint.

Torch-free. The leakage check (:func:`skinonnx.data.duplicates.leakage_check`) refuses to train when validation or
test images duplicate training images unless ``--allow-leakage``; its record goes into config.json (and from there
into the model card). With ``--weights BACKBONE`` (a `pretrain` file with its card) the validation and test images
are also checked against the backbone's pretraining images (data/pretraining.py). Cached by file content, so a
second run on the same data decodes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..data.duplicates import leakage_check
from ..data.exclusions import apply_exclusions, exclusion_reason, read_exclude_list
from ..data.layouts import LabeledData, discover
from ..data.pretraining import card_path, not_checked, pretraining_leakage_check, read_card
from ..errors import DataError
from .config import TrainConfig


def discover_settings(cfg: TrainConfig) -> dict[str, Any]:
    """What :func:`~skinonnx.data.layouts.discover` takes from the settings (besides the data path)."""
    return {"positive_class": cfg.positive_class, "malignant": cfg.malignant or None, "seed": cfg.seed,
            "group_column": cfg.group_column}


def trainable(cfg: TrainConfig, data: LabeledData, *, cross_validation: bool = False,
              warn: Callable[[str], None] | None = None) -> LabeledData:
    """``data``, refused before any training when it cannot train: more than two classes without --malignant,
    --class-bias with two classes, a class with no training (or, for a single run, validation) image. ``warn``:
    what says the data's warnings (a class of one image...) before such an error."""
    try:
        _check_trainable(cfg, data, cross_validation)
    except DataError:
        if warn is not None:
            for warning in data.warnings:
                warn(f"warning: {warning}")
        raise
    return data


def _check_trainable(cfg: TrainConfig, data: LabeledData, cross_validation: bool) -> None:
    data.malignant_group()
    if cfg.class_bias != "none" and len(data.classes) == 2:
        raise DataError(f"--class-bias {cfg.class_bias} is for more than two classes: with two, the threshold "
                        "(--threshold-policy) is the decision")
    needs = [("train", "val")] if cross_validation else [("train",), ("val",)]
    for splits in needs:
        if not any(data.splits.get(name) for name in splits):
            continue  # a missing split has its own error (LabeledData.split) where it is read
        missing = data.missing_classes(splits)
        if missing:
            where = " or ".join(splits)
            raise DataError(f"{data.root}: class(es) {missing} have no images in the {where} split: a model cannot "
                            f"learn or validate a class it never sees (classes {list(data.classes)})")


def discovered(cfg: TrainConfig) -> LabeledData:
    """The run's data as its settings describe it: discovered, minus ``--exclude-list``."""
    data = discover(cfg.data, **discover_settings(cfg))
    if cfg.exclude_list:
        data = apply_exclusions(data, read_exclude_list(cfg.exclude_list), cfg.exclude_list,
                                reason=exclusion_reason(cfg.exclude_list))
    return data


def checked_data(cfg: TrainConfig, echo: Callable[[str], None] = print, *, cross_validation: bool = False
                 ) -> tuple[LabeledData, dict[str, Any]]:
    """The data, refused when it cannot train or leaks (between its splits, and with ``--weights BACKBONE``
    between its validation/test images and the backbone's pretraining images: record ``pretraining``)."""
    data = discovered(cfg)
    trainable(cfg, data, cross_validation=cross_validation, warn=echo)
    for warning in data.warnings:
        echo(f"warning: {warning}")
    record = leakage_check(data, allow=cfg.allow_leakage, max_pixels=cfg.max_pixels, echo=echo)
    if cfg.weights not in ("imagenet", "none"):
        card = read_card(cfg.weights)
        record["pretraining"] = not_checked(f"{card_path(cfg.weights).name} not found beside the weights: their "
                                            "pretraining images are unknown") if card is None else (
            pretraining_leakage_check(data, cfg.weights, card, allow=cfg.allow_leakage, max_pixels=cfg.max_pixels,
                                      echo=echo))
        if card is None:
            echo(f"note: {cfg.weights} has no card ({card_path(cfg.weights).name}): not checked against its "
                 "pretraining images")
    return data, record
