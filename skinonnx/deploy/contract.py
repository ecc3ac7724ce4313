"""The ONNX file's self-description: what an embedding app reads from ``metadata_props``.

All values are strings (an ONNX rule); lists and dicts are JSON. docs/EMBEDDING.md
documents each key. No torch here: this is read on the deployment path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..data.preprocessing import Preprocessing
from ..errors import ModelFileError

SCHEMA_KEY = "skinonnx_schema_version"
SCHEMA_VERSION = "1"
INPUT_NAME = "input"
OUTPUT_NAMES = ("logits", "probabilities")
#: optional third output ``[N, h, w]``: the positive class's log-odds per layer4 cell (docs/EMBEDDING.md)
CAM_OUTPUT = "cam"
#: extra output of a fold ensemble: [N, K] calibrated positive-class probability of each member
MEMBER_OUTPUT = "member_probabilities"
#: optional last output [N]: how unlike the training images each input is (docs/SAFETY.md); higher = more unlike
OOD_OUTPUT = "ood_score"
#: metadata: the score above which an image is refused ("not assessed"), and how the score was fitted (JSON)
OOD_THRESHOLD_KEY = "ood_threshold"
OOD_KEY = "ood"
#: the decision outputs, last in every export (:mod:`skinonnx.deploy.decision`): float32 [N] the malignancy
#: group's probability, bool [N] ``p_malignant >= threshold``, int64 [N] index into ``classes`` (the diagnosis),
#: and bool [N] "assessed" (finite ``ood_score <= ood_threshold``)
P_MALIGNANT_OUTPUT = "p_malignant"
MALIGNANT_OUTPUT = "malignant"
LABEL_OUTPUT = "label"
IN_DISTRIBUTION_OUTPUT = "in_distribution"
DECISION_OUTPUTS = (P_MALIGNANT_OUTPUT, MALIGNANT_OUTPUT, LABEL_OUTPUT, IN_DISTRIBUTION_OUTPUT)
#: files exported before ``p_malignant``/``malignant`` existed end with these two only (still read)
LABEL_OUTPUTS = (LABEL_OUTPUT, IN_DISTRIBUTION_OUTPUT)
#: metadata (JSON): the malignancy group's class names (two classes: the positive class), and for more than two
#: classes the offsets added to the log-probabilities before the argmax (all zero: argmax)
MALIGNANT_CLASSES_KEY = "malignant_classes"
CLASS_BIAS_KEY = "class_bias"
#: metadata (JSON): what the two outputs mean and ``refusal``, the text shown instead of a class
DECISION_KEY = "decision"
#: the graph's nodes of the ood_score head are named ``ood/...`` (the child module ``ood``), those of the
#: decision ``decision/...``; converters keep them float32 (fp16: far-away images' scores can exceed 65504, and
#: the decision compares float32 probabilities with the float32 thresholds)


def keeps_float32(name: str) -> bool:
    return name.startswith(("ood/", "/ood/", "decision/"))


#: what predict, test, serve and the web page report for an image whose ood_score is above the threshold
OOD_REFUSAL = "not assessed: unlike the training images"


@dataclass(frozen=True)
class InputSpec:
    """What the graph's single input expects; the metadata says it so apps need not guess."""

    name: str
    dtype: str  # "float32" | "uint8"
    layout: str  # "NCHW" | "NHWC"
    in_graph: tuple[str, ...] = ()  # preprocessing steps the graph itself performs, in order


#: the default export: the app does everything up to a normalised float32 NCHW batch
FLOAT_INPUT = InputSpec(INPUT_NAME, "float32", "NCHW")
#: ``export --embed-preprocessing``: the app decodes and resizes; the graph does the rest
UINT8_INPUT = InputSpec("image", "uint8", "NHWC", ("center_crop", "cast_float32", "divide_255",
                                                  "subtract_mean_divide_std", "nhwc_to_nchw"))
INPUT_SPECS = {(s.dtype, s.layout): s for s in (FLOAT_INPUT, UINT8_INPUT)}


@dataclass(frozen=True)
class ModelContract:
    classes: tuple[str, ...]
    positive_index: int
    preprocessing: Preprocessing
    threshold: float = 0.5
    threshold_policy: str = "fixed:0.5"
    temperature: float = 1.0
    input_spec: InputSpec = FLOAT_INPUT
    extra: dict[str, str] = field(default_factory=dict)
    output_names: tuple[str, ...] = OUTPUT_NAMES  # + (CAM_OUTPUT,) with the map, + MEMBER_OUTPUT for an ensemble
    #                            (+ OOD_OUTPUT with OOD_THRESHOLD_KEY in extra; + DECISION_OUTPUTS last)
    #: the malignancy group's class indices (sorted); () = (positive_index,) (two classes). With more than two
    #: classes ``positive_index`` is the group's first class (the one the ``cam`` map shows)
    malignant_group: tuple[int, ...] = ()
    class_bias: tuple[float, ...] | None = None  # more than two classes: offsets on log p (zeros: argmax)

    @property
    def has_decision_outputs(self) -> bool:
        """Whether the graph outputs ``label`` and ``in_distribution`` (exports since the decision outputs)."""
        return all(name in self.output_names for name in LABEL_OUTPUTS)

    @property
    def group(self) -> tuple[int, ...]:
        """The malignancy group's class indices (two classes: the positive class)."""
        return self.malignant_group or (self.positive_index,)

    @property
    def malignant_classes(self) -> tuple[str, ...]:
        return tuple(self.classes[i] for i in self.group)

    @property
    def multiclass(self) -> bool:
        return len(self.classes) > 2

    @property
    def ood_threshold(self) -> float | None:
        """The refusal threshold on ``ood_score`` (None: the file has no OOD score)."""
        value = self.extra.get(OOD_THRESHOLD_KEY)
        return float(value) if value is not None and OOD_OUTPUT in self.output_names else None

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
            "input_name": self.input_spec.name,
            "input_dtype": self.input_spec.dtype,
            "input_layout": self.input_spec.layout,
            "in_graph_preprocessing": json.dumps(list(self.input_spec.in_graph)),
            "output_names": json.dumps(list(self.output_names)),
            **self.preprocessing.to_metadata(),
            MALIGNANT_CLASSES_KEY: json.dumps(list(self.malignant_classes)),
        }
        if self.class_bias is not None:
            meta[CLASS_BIAS_KEY] = json.dumps([float(b) for b in self.class_bias])
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
            layout = (meta.get("input_dtype", "float32"), meta.get("input_layout", "NCHW"))
            if layout not in INPUT_SPECS:
                raise ModelFileError(f"{source}: unsupported input {layout[0]} {layout[1]} in the metadata "
                                     f"(supported: {', '.join(' '.join(k) for k in INPUT_SPECS)})")
            if len(set(classes)) < 2:
                raise ModelFileError(f"model classes {list(classes)}: skinonnx models have two or more distinct "
                                     "named classes")
            group = tuple(json.loads(meta[MALIGNANT_CLASSES_KEY])) if MALIGNANT_CLASSES_KEY in meta else ()
            if len(classes) > 2 and not group:
                raise ModelFileError(f"a model of {len(classes)} classes needs '{MALIGNANT_CLASSES_KEY}' in its "
                                     "metadata (the malignancy group)")
            unknown = [g for g in group if g not in classes]
            if unknown:
                raise ModelFileError(f"'{MALIGNANT_CLASSES_KEY}' names {unknown}, not in the classes {list(classes)}")
            bias = meta.get(CLASS_BIAS_KEY)
            return cls(
                malignant_group=tuple(sorted(classes.index(g) for g in group)),
                class_bias=tuple(float(b) for b in json.loads(bias)) if bias is not None else None,
                classes=classes,
                positive_index=int(meta["positive_index"]),
                preprocessing=Preprocessing.from_metadata(meta),
                threshold=float(meta["decision_threshold"]),
                threshold_policy=meta.get("threshold_policy", "fixed"),
                temperature=float(meta.get("temperature", "1.0")),
                input_spec=INPUT_SPECS[layout],
                output_names=tuple(json.loads(meta.get("output_names", json.dumps(list(OUTPUT_NAMES))))),
                extra={k: v for k, v in meta.items() if k not in known and k not in _OWN_KEYS},
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ModelFileError(f"{source}: skinonnx metadata is incomplete or malformed ({exc!r})") from None
        except ModelFileError as exc:
            raise ModelFileError(f"{source}: {exc.message}") from None

    def __post_init__(self) -> None:
        k = len(self.classes)
        if k < 2 or not all(isinstance(c, str) and c for c in self.classes) or len(set(self.classes)) != k:
            raise ModelFileError(f"model classes {list(self.classes)}: skinonnx models have two or more distinct "
                                 "named classes")
        if self.positive_index not in range(k):
            raise ModelFileError(f"positive class index {self.positive_index} is not in 0..{k - 1}")
        group = self.malignant_group
        if k == 2 and group not in ((), (self.positive_index,)):
            raise ModelFileError(f"malignancy group {[self.classes[i] for i in group if i in range(k)]}: with two "
                                 f"classes it is the positive class {self.classes[self.positive_index]!r}")
        if k > 2 and (not group or len(set(group)) != len(group) or not set(group) < set(range(k))
                      or self.positive_index != min(group)):
            raise ModelFileError(f"a model of {k} classes needs a malignancy group of some (not all) of its classes, "
                                 f"its first one the positive index (got {list(group)}, {self.positive_index})")
        if k == 2 and self.class_bias is not None:
            raise ModelFileError("'class_bias' is for more than two classes (two decide by the threshold)")
        if self.class_bias is not None and (len(self.class_bias) != k
                                            or not all(math.isfinite(b) for b in self.class_bias)):
            raise ModelFileError(f"'class_bias' {list(self.class_bias)}: expected {k} finite numbers")
        if k == 2:  # one spelling of the two-class group, so contracts compare equal
            object.__setattr__(self, "malignant_group", ())
        if not 0.0 <= self.threshold <= 1.0:  # also refuses NaN
            raise ModelFileError(f"decision threshold {self.threshold} is not in [0, 1]")
        if not 0.0 < self.temperature < float("inf"):
            raise ModelFileError(f"temperature {self.temperature} is not a positive number")


_OWN_KEYS = frozenset({SCHEMA_KEY, "classes", "positive_class", "positive_index", "decision_threshold",
                       "threshold_policy", "temperature", "input_name", "input_dtype", "input_layout",
                       "in_graph_preprocessing", "output_names", "image_size", "resize_size", "resize_policy",
                       "interpolation", "mean", "std", "channel_order", "pixel_scale",
                       MALIGNANT_CLASSES_KEY, CLASS_BIAS_KEY})
