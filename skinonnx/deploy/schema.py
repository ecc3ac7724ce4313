"""The metadata schema (version 1): every key skinonnx writes, its type, and validation.

docs/EMBEDDING.md documents each key for app developers; a test keeps the two in step and
checks that export writes no key this module does not know. No torch, no onnx.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .contract import (
    CAM_OUTPUT,
    CLASS_BIAS_KEY,
    DECISION_KEY,
    DECISION_OUTPUTS,
    INPUT_SPECS,
    LABEL_OUTPUTS,
    MALIGNANT_CLASSES_KEY,
    MEMBER_OUTPUT,
    OOD_KEY,
    OOD_OUTPUT,
    OOD_THRESHOLD_KEY,
    OUTPUT_NAMES,
    SCHEMA_KEY,
    SCHEMA_VERSION,
)

Check = Callable[[str], str | None]  # value -> problem, or None when fine


def _int(lo: int, hi: int) -> Check:
    def check(v: str) -> str | None:
        if not re.fullmatch(r"-?\d+", v.strip()):
            return f"expected an integer, got {v!r}"
        return None if lo <= int(v) <= hi else f"expected an integer in [{lo}, {hi}], got {v}"
    return check


def _float(lo: float, hi: float, *, lo_open: bool = False) -> Check:
    def check(v: str) -> str | None:
        try:
            x = float(v)
        except ValueError:
            return f"expected a number, got {v!r}"
        if not math.isfinite(x) or x > hi or x < lo or (lo_open and x == lo):
            return f"expected a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v}"
        return None
    return check


def _json(kind: type, length: int | None = None, item: type | tuple[type, ...] | None = None,
          min_length: int = 0) -> Check:
    def check(v: str) -> str | None:
        try:
            value = json.loads(v)
        except json.JSONDecodeError:
            return f"expected JSON, got {v[:60]!r}"
        if not isinstance(value, kind):
            return f"expected a JSON {kind.__name__.replace('dict', 'object')}, got {v[:60]!r}"
        if length is not None and len(value) != length:
            return f"expected {length} items, got {len(value)}"
        if len(value) < min_length:
            return f"expected at least {min_length} items, got {len(value)}"
        if item is not None and not all(isinstance(x, item) and not isinstance(x, bool) for x in value):
            return f"expected items of type {getattr(item, '__name__', 'number')}, got {v[:60]!r}"
        return None
    return check


def _one_of(*allowed: str) -> Check:
    return lambda v: None if v in allowed else f"expected one of {', '.join(allowed)}, got {v!r}"


def _text(v: str) -> str | None:
    return None if v.strip() else "empty value"


def _pattern(regex: str, what: str) -> Check:
    return lambda v: None if re.fullmatch(regex, v) else f"expected {what}, got {v[:70]!r}"


def _positive_std(v: str) -> str | None:
    problem = _json(list, 3, (int, float))(v)
    return problem or (None if min(json.loads(v)) > 0 else "all three values must be > 0")


def _output_names(v: str) -> str | None:
    """``["logits", "probabilities"]``, then in an ensemble ``"member_probabilities"`` (checked against the
    ``ensemble`` key in the cross checks), then optionally ``"cam"`` (the class activation map), then optionally
    ``"ood_score"`` (checked against ``ood_threshold``), then the decision outputs ``"p_malignant"``,
    ``"malignant"``, ``"label"`` and ``"in_distribution"`` (older files have only the last two, or none)."""
    problem = _json(list, None, str)(v)
    if problem:
        return problem
    names = json.loads(v)
    if names[-len(DECISION_OUTPUTS):] == list(DECISION_OUTPUTS):
        names = names[:-len(DECISION_OUTPUTS)]
    elif names[-2:] == list(LABEL_OUTPUTS):
        names = names[:-2]
    middle = names[2:-1] if names[-1:] == [OOD_OUTPUT] else names[2:]
    if names[:2] != list(OUTPUT_NAMES) or middle not in ([], [CAM_OUTPUT], [MEMBER_OUTPUT],
                                                         [MEMBER_OUTPUT, CAM_OUTPUT]):
        return (f"expected {list(OUTPUT_NAMES)}, then '{MEMBER_OUTPUT}' for an ensemble, then optionally "
                f"'{CAM_OUTPUT}', then optionally '{OOD_OUTPUT}', then {list(DECISION_OUTPUTS)}, got {v[:80]!r}")
    return None


@dataclass(frozen=True)
class KeySpec:
    name: str
    check: Check
    required: bool = True


KEYS: dict[str, KeySpec] = {k.name: k for k in (
    # --- identity and decision -------------------------------------------------------
    KeySpec(SCHEMA_KEY, _one_of(SCHEMA_VERSION)),
    KeySpec("classes", _json(list, None, str, min_length=2)),
    KeySpec("positive_class", _text),  # more than two classes: the malignancy group's first class
    KeySpec("positive_index", _int(0, 10_000)),
    KeySpec(MALIGNANT_CLASSES_KEY, _json(list, None, str, min_length=1), required=False),  # required for K > 2
    KeySpec(CLASS_BIAS_KEY, _json(list, None, (int, float)), required=False),  # K > 2 only: offsets on log p
    KeySpec("decision_threshold", _float(0.0, 1.0)),
    KeySpec("threshold_policy", _text, required=False),  # informative: how the threshold was chosen
    KeySpec("temperature", _float(0.0, 1e6, lo_open=True)),
    # --- graph interface ---------------------------------------------------------------
    KeySpec("input_name", _text),
    KeySpec("input_dtype", _one_of(*sorted({d for d, _ in INPUT_SPECS})), required=False),
    KeySpec("input_layout", _one_of(*sorted({layout for _, layout in INPUT_SPECS}))),
    KeySpec("in_graph_preprocessing", _json(list, None, str), required=False),
    KeySpec("output_names", _output_names),
    # --- preprocessing -----------------------------------------------------------------
    KeySpec("image_size", _int(16, 4096)),
    KeySpec("resize_size", _int(16, 8192)),
    KeySpec("resize_policy", _one_of("shorter_side_then_center_crop")),
    KeySpec("interpolation", _one_of("bilinear", "bicubic", "nearest")),
    KeySpec("mean", _json(list, 3, (int, float))),
    KeySpec("std", _positive_std),
    KeySpec("channel_order", _one_of("RGB")),
    KeySpec("pixel_scale", _one_of("1/255")),
    # --- provenance (informative; apps need none of these) -----------------------------
    KeySpec("model_architecture", _text, required=False),
    KeySpec("training_metrics", _json(dict), required=False),
    KeySpec("calibration", _json(dict), required=False),
    KeySpec("source_checkpoint", _text, required=False),
    KeySpec("source_checkpoint_sha256", _pattern(r"[0-9a-f]{64}", "64 lowercase hex digits"), required=False),
    KeySpec("skinonnx_version", _text, required=False),
    KeySpec("torch_version", _text, required=False),
    KeySpec("opset", _int(1, 100), required=False),
    KeySpec("exported_at", _pattern(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "an ISO 8601 UTC time"), required=False),
    KeySpec("training_config", _json(dict), required=False),
    KeySpec("training_run_dir", _text, required=False),
    KeySpec("training_data", _text, required=False),
    KeySpec("quantization", _json(dict), required=False),
    KeySpec("precision", _json(dict), required=False),
    # --- fold ensembles and test-time augmentation (optional: absent in single models) ----
    KeySpec("ensemble", _json(dict), required=False),
    KeySpec("tta", _json(dict), required=False),
    # --- out-of-distribution score (optional: absent with export --no-ood) ---------------
    KeySpec(OOD_THRESHOLD_KEY, _float(0.0, 1e30), required=False),
    KeySpec(OOD_KEY, _json(dict), required=False),
    KeySpec(DECISION_KEY, _json(dict), required=False),  # what label/in_distribution mean, the refusal text
)}


class NotOurs(ValueError):
    """The metadata has no skinonnx schema key: a foreign ONNX file."""


def validate(meta: Mapping[str, str]) -> list[str]:
    """Problems with ``meta`` as skinonnx schema-1 metadata; empty when valid.

    Raises :class:`NotOurs` when the schema key is absent. Unknown extra keys are allowed
    (an app may add its own), as long as they do not start with ``skinonnx_``.
    """
    if SCHEMA_KEY not in meta:
        raise NotOurs(f"no '{SCHEMA_KEY}' metadata key")
    problems = []
    missing = [k.name for k in KEYS.values() if k.required and k.name not in meta]
    if missing:
        problems.append("missing required keys: " + ", ".join(missing))
    for key, value in meta.items():
        spec = KEYS.get(key)
        if spec is None:
            if key.startswith("skinonnx_"):
                problems.append(f"unknown key '{key}' in the skinonnx namespace")
            continue
        problem = spec.check(value)
        if problem:
            problems.append(f"'{key}': {problem}")
    if not problems:
        problems.extend(_cross_checks(meta))
    return problems


def _cross_checks(meta: Mapping[str, str]) -> list[str]:
    problems = []
    classes = json.loads(meta["classes"])
    k, pos = len(classes), int(meta["positive_index"])
    if len(set(classes)) != k:
        problems.append(f"'classes' {classes} repeats a name")
    if pos >= k:
        problems.append(f"'positive_index' {pos} is not an index into the {k} classes")
    elif classes[pos] != meta["positive_class"]:
        problems.append(f"'positive_class' {meta['positive_class']!r} is not classes[{meta['positive_index']}]")
    group = json.loads(meta.get(MALIGNANT_CLASSES_KEY, "[]"))
    if k > 2 and not group:
        problems.append(f"a model of {k} classes needs '{MALIGNANT_CLASSES_KEY}'")
    elif group and (not set(group) <= set(classes) or len(set(group)) != len(group)):
        problems.append(f"'{MALIGNANT_CLASSES_KEY}' {group} are not distinct names from 'classes'")
    elif group and (set(group) == set(classes) if k > 2 else group != [meta["positive_class"]]):
        problems.append(f"'{MALIGNANT_CLASSES_KEY}' {group}: two classes: the positive class; more: some, not all")
    elif group and pos < k and classes[pos] != min(group, key=classes.index):
        problems.append(f"'positive_class' is not the first of '{MALIGNANT_CLASSES_KEY}' {group}")
    if CLASS_BIAS_KEY in meta:
        bias = json.loads(meta[CLASS_BIAS_KEY])
        if k == 2 or len(bias) != k or not all(math.isfinite(b) for b in bias):
            problems.append(f"'{CLASS_BIAS_KEY}': {k} finite numbers, for more than two classes only")
    if int(meta["resize_size"]) < int(meta["image_size"]):
        problems.append("'resize_size' is smaller than 'image_size'")
    pair = (meta.get("input_dtype", "float32"), meta["input_layout"])
    if pair not in INPUT_SPECS:
        problems.append(f"input {pair[0]} {pair[1]} is not a supported combination")
    else:
        in_graph = json.loads(meta.get("in_graph_preprocessing", "[]"))
        if tuple(in_graph) != INPUT_SPECS[pair].in_graph:
            problems.append(f"'in_graph_preprocessing' {in_graph} does not match a {pair[0]} {pair[1]} input")
    has_members = MEMBER_OUTPUT in json.loads(meta["output_names"])
    if has_members != ("ensemble" in meta):
        problems.append(f"'{MEMBER_OUTPUT}' output and 'ensemble' key go together (ensembles have both)")
    elif has_members and not isinstance(json.loads(meta["ensemble"]).get("members"), int):
        problems.append("'ensemble' lacks the integer 'members' (K)")
    has_decision = set(LABEL_OUTPUTS) <= set(json.loads(meta["output_names"]))
    if has_decision != (DECISION_KEY in meta):
        problems.append(f"the {list(LABEL_OUTPUTS)} outputs and the '{DECISION_KEY}' key go together")
    has_ood = OOD_OUTPUT in json.loads(meta["output_names"])
    if has_ood != (OOD_THRESHOLD_KEY in meta):
        problems.append(f"'{OOD_OUTPUT}' output and '{OOD_THRESHOLD_KEY}' key go together")
    return problems
