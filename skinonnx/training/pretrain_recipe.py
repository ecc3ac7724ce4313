"""`pretrain`'s default recipe: the `train` settings it changes, and those it reads off the data (torch-free).

A backbone is trained from random init on a large labelled dermoscopy set (HAM10000: seven classes, two thirds
nevi, several images per lesion), so: every class, a class-balanced sampler, the cosine schedule over all
epochs with no early stop, splits and folds by the index CSV's ``lesion_id`` when it has one, and per-class
decision offsets (``--class-bias val``) when there are more than two classes.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..data.layouts import INDEX_FILES, LabeledData
from ..errors import DataError

#: `train` settings `pretrain` changes (options given on the command line still win)
DEFAULTS: dict[str, Any] = {"weights": "none", "sampler": "balanced", "scheduler": "cosine", "early_stop": 0,
                            "image_size": 96, "epochs": 8}
LESION_COLUMN = "lesion_id"
#: class names taken as malignant when --malignant is not given (HAM10000's, ISIC's, the synthetic sets')
MALIGNANT_NAMES = frozenset({"mel", "bcc", "akiec", "scc", "melanoma", "malignant"})


def index_csv(data: str | Path) -> Path | None:
    """The index CSV that ``data`` names (the file, or one in the folder), else None."""
    path = Path(data)
    if path.is_file():
        return path if path.suffix.lower() == ".csv" else None
    return next((path / name for name in INDEX_FILES if (path / name).is_file()), None)


def group_column(data: str | Path) -> str | None:
    """``lesion_id`` when the data's index CSV has that column, else None (train's default)."""
    found = index_csv(data)
    if found is None:
        return None
    try:
        with open(found, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError):
        return None
    return LESION_COLUMN if LESION_COLUMN in header else None


def malignant_group(data: LabeledData) -> str:
    """The malignancy group `train` needs for more than two classes, from the class names; refused when no
    class name says malignant."""
    group = [c for c in data.classes if c.lower() in MALIGNANT_NAMES or c.lower().startswith("malignant")]
    if not group or len(group) == len(data.classes):
        raise DataError(f"{data.root}: name the malignant classes with --malignant A,B (classes "
                        f"{list(data.classes)}; none of the names {sorted(MALIGNANT_NAMES)} found)")
    return ",".join(group)


def from_data(data: LabeledData, given: set[str], path: str | Path) -> dict[str, Any]:
    """The settings read off the data, for those not ``given`` on the command line."""
    out: dict[str, Any] = {}
    if "group_column" not in given and group_column(path):
        out["group_column"] = LESION_COLUMN
    if len(data.classes) > 2:
        if "malignant" not in given and "positive_class" not in given:
            out["malignant"] = malignant_group(data)
        if "class_bias" not in given:
            out["class_bias"] = "val"
    return out
