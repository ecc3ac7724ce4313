"""The ONNX file's self-description: what an embedding app reads from ``metadata_props``.

All values are strings (an ONNX rule); lists and dicts are JSON. docs/EMBEDDING.md
documents each key. No torch here: this is read on the deployment path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import ModelFileError
from .preprocessing import Preprocessing

SCHEMA_KEY = "skinonnx_schema_version"
SCHEMA_VERSION = "1"
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probabilities")


@dataclass(frozen=True)
class ModelContract:
    classes: tuple[str, ...]
    positive_index: int
    preprocessing: Preprocessing
    threshold: float = 0.5
    threshold_policy: str = "fixed:0.5"
    temperature: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def positive_class(self) -> str:
        return self.classes[self.positive_index]

    def to_metadata(self) -> dict[str, str]:
        meta = {
            SCHEMA_KEY: SCHEMA_VERSION,
            "classes": json.dumps(list(self.classes)),
            "positive_class": self.positive_class,
            "positive_index": str(self.positive_index),
            "decision_threshold": repr(float(self.threshold)),
            "threshold_policy": self.threshold_policy,
            "temperature": repr(float(self.temperature)),
            "input_name": INPUT_NAME,
            "output_names": json.dumps(list(OUTPUT_NAMES)),
            **self.preprocessing.to_metadata(),
        }
        meta.update(self.extra)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str = "model") -> ModelContract:
        if SCHEMA_KEY not in meta:
            raise ModelFileError(
                f"{source}: no skinonnx metadata in this ONNX file; pass --image-size, --mean and --std "
                "(and --classes) to use it anyway")
        if meta[SCHEMA_KEY] != SCHEMA_VERSION:
            raise ModelFileError(f"{source}: metadata schema version {meta[SCHEMA_KEY]} is not supported "
                                 f"(this skinonnx reads version {SCHEMA_VERSION})")
        try:
            classes = tuple(json.loads(meta["classes"]))
            known = set(cls.__dataclass_fields__) | set(Preprocessing.__dataclass_fields__)
            return cls(
                classes=classes,
                positive_index=int(meta["positive_index"]),
                preprocessing=Preprocessing.from_metadata(meta),
                threshold=float(meta["decision_threshold"]),
                threshold_policy=meta.get("threshold_policy", "fixed"),
                temperature=float(meta.get("temperature", "1.0")),
                extra={k: v for k, v in meta.items() if k not in known and k not in _OWN_KEYS},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source}: skinonnx metadata is incomplete or malformed ({exc!r})") from None
        except ModelFileError as exc:
            raise ModelFileError(f"{source}: {exc.message}") from None

    def __post_init__(self) -> None:
        if len(self.classes) != 2 or not all(isinstance(c, str) and c for c in self.classes):
            raise ModelFileError(f"model classes {list(self.classes)}: skinonnx models have exactly two named "
                                 "classes (benign vs malignant)")
        if self.positive_index not in (0, 1):
            raise ModelFileError(f"positive class index {self.positive_index} is not 0 or 1")
        if not 0.0 <= self.threshold <= 1.0:  # also refuses NaN
            raise ModelFileError(f"decision threshold {self.threshold} is not in [0, 1]")
        if not 0.0 < self.temperature < float("inf"):
            raise ModelFileError(f"temperature {self.temperature} is not a positive number")


_OWN_KEYS = frozenset({SCHEMA_KEY, "classes", "positive_class", "positive_index", "decision_threshold",
                       "threshold_policy", "temperature", "input_name", "output_names", "image_size",
                       "resize_size", "resize_policy", "interpolation", "mean", "std", "channel_order",
                       "input_layout", "pixel_scale"})
