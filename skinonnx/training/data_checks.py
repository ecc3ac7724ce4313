"""The data a run trains on: discovered, minus ``--exclude-list``, and checked for train/test leakage first.
What was excluded travels with the data (``LabeledData.exclusions``) into config.json and the checkpoint.

Torch-free. The leakage check (:func:`skinonnx.data.duplicates.leakage_check`) refuses to train when validation or
test images duplicate training images unless ``--allow-leakage``; its record goes into config.json (and from there
into the model card). Cached by file content, so a second run on the same data decodes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..data.duplicates import leakage_check
from ..data.exclusions import apply_exclusions, exclusion_reason, read_exclude_list
from ..data.layouts import LabeledData, discover
from .config import TrainConfig


def checked_data(cfg: TrainConfig, echo: Callable[[str], None] = print) -> tuple[LabeledData, dict[str, Any]]:
    data = discover(cfg.data, positive_class=cfg.positive_class, seed=cfg.seed)
    if cfg.exclude_list:
        data = apply_exclusions(data, read_exclude_list(cfg.exclude_list), cfg.exclude_list,
                                reason=exclusion_reason(cfg.exclude_list))
    return data, leakage_check(data, allow=cfg.allow_leakage, max_pixels=cfg.max_pixels, echo=echo)
