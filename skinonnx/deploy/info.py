"""`info`: what an ONNX file is and whether it keeps the skinonnx contract (no torch, no onnx).

The file's header (IR version, opsets, producer, metadata) is read straight from the
protobuf wire format, the way an app without an ONNX library can do it (docs/EMBEDDING.md);
inputs and outputs come from an ONNX Runtime session, which also proves the file loads.
"""

from __future__ import annotations

import json
import mmap
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelFileError
from ..hashing import file_sha256
from .contract import (
    CAM_OUTPUT,
    DECISION_KEY,
    DECISION_OUTPUTS,
    MEMBER_OUTPUT,
    OOD_KEY,
    OOD_OUTPUT,
    OOD_REFUSAL,
    OOD_THRESHOLD_KEY,
    SCHEMA_KEY,
)
from .schema import NotOurs, validate

_ORT_TYPES = {"tensor(float)": "float32", "tensor(uint8)": "uint8", "tensor(float16)": "float16",
              "tensor(double)": "float64", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(bool)": "bool"}
_VALUE_WIDTH = 100


@dataclass
class Header:
    ir_version: int = 0
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)  # domain ("ai.onnx" for the default) -> version
    metadata: dict[str, str] = field(default_factory=dict)


def _varint(buf: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: Any, start: int, end: int):
    """Yield ``(field number, value)``: ints for varints, ``(begin, end)`` spans for bytes; skip fixed."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("field runs past the end of the message")
            yield number, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos != end:
        raise ValueError("message ends inside a field")


def read_header(path: str | os.PathLike[str]) -> Header:
    """ModelProto fields 1 (ir_version), 2/3 (producer), 8 (opset_import), 14 (metadata_props)."""
    header = Header()
    producer = ["", ""]
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            def text(span: tuple[int, int]) -> str:
                return bytes(buf[span[0]:span[1]]).decode("utf-8")

            def pairs(span: tuple[int, int]) -> dict[int, Any]:
                return dict(_fields(buf, *span))

            for number, value in _fields(buf, 0, len(buf)):
                if number == 1:
                    header.ir_version = int(value)
                elif number in (2, 3):
                    producer[number - 2] = text(value)
                elif number == 8:
                    entry = pairs(value)
                    domain = text(entry[1]) if 1 in entry else ""
                    header.opsets[domain or "ai.onnx"] = int(entry.get(2, 0))
                elif number == 14:
                    entry = pairs(value)
                    header.metadata[text(entry[1]) if 1 in entry else ""] = text(entry[2]) if 2 in entry else ""
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a valid ONNX model (cannot parse the protobuf: {exc})") from None
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not header.ir_version or not header.opsets:
        raise ModelFileError(f"{path}: not a valid ONNX model (no IR version or opset)")
    header.producer = " ".join(p for p in producer if p)
    return header


@dataclass
class Tensor:
    name: str
    dtype: str
    shape: list[int | str]

    def text(self) -> str:
        return f"{self.name}: {self.dtype} [{', '.join(str(d) for d in self.shape)}]"


@dataclass
class ModelInfo:
    path: str
    size_bytes: int
    sha256: str
    ir_version: int
    opsets: dict[str, int]
    producer: str
    inputs: list[Tensor]
    outputs: list[Tensor]
    metadata: dict[str, str]
    ours: bool
    problems: list[str]

    @property
    def valid(self) -> bool:
        return self.ours and not self.problems

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = {"key": SCHEMA_KEY, "version": self.metadata.get(SCHEMA_KEY), "ours": self.ours,
                          "valid": self.valid, "problems": self.problems}
        for key in ("ours", "problems"):
            del data[key]
        return data

    def text(self) -> str:
        opsets = ", ".join(f"{d} {v}" for d, v in sorted(self.opsets.items()))
        lines = [f"model     {self.path}",
                 f"file      {self.size_bytes / 1e6:.1f} MB ({self.size_bytes:,} bytes), sha256 {self.sha256}",
                 f"format    ONNX IR {self.ir_version}, opset {opsets}" + (f", by {self.producer}"
                                                                          if self.producer else "")]
        lines += [f"{'input' if i == 0 else '':<9} {t.text()}" for i, t in enumerate(self.inputs)]
        lines += [f"{'outputs' if i == 0 else '':<9} {t.text()}" for i, t in enumerate(self.outputs)]
        if not self.ours:
            lines.append(f"schema    none (no '{SCHEMA_KEY}' key): not a skinonnx model")
            return "\n".join(lines)
        state = "valid" if self.valid else f"INVALID ({len(self.problems)} problems)"
        lines.append(f"schema    {SCHEMA_KEY} {self.metadata[SCHEMA_KEY]}: {state}")
        lines += [f"          ✗ {p}" for p in self.problems]
        if self.valid:
            lines.append("contract  " + feeding_summary(self.metadata))
            lines += ensemble_summary(self.metadata)
        width = max(len(k) for k in self.metadata)
        lines.append(f"metadata  ({len(self.metadata)} keys)")
        for key, value in self.metadata.items():
            shown = value if len(value) <= _VALUE_WIDTH else value[:_VALUE_WIDTH - 1] + "…  (full value: --json)"
            lines.append(f"  {key:<{width}}  {shown}")
        return "\n".join(lines)


def feeding_summary(meta: dict[str, str]) -> str:
    """One paragraph: how to turn an image file into this model's input and read its output."""
    size, resize = meta["image_size"], meta["resize_size"]
    classes = json.loads(meta["classes"])
    pos = int(meta["positive_index"])
    steps = [f"decode to {meta['channel_order']}, resize the shorter side to {resize} "
             f"(Pillow {meta['interpolation']}), centre-crop {size}x{size}"]
    if meta.get("input_dtype", "float32") == "uint8":
        steps.append(f"feed '{meta['input_name']}' as uint8 [N, H, W, 3], cropped or only resized "
                     "(the graph centre-crops, scales and normalises)")
    else:
        steps.append(f"x/255, (x - mean {meta['mean']}) / std {meta['std']}, feed '{meta['input_name']}' as "
                     f"float32 [N, 3, {size}, {size}]")
    if len(classes) == 2:
        steps.append(f"'{meta['positive_class']}' if probabilities[:, {pos}] >= "
                     f"{float(meta['decision_threshold']):.4f} else '{classes[1 - pos]}' (probabilities are "
                     f"calibrated, T = {float(meta['temperature']):.4g})")
    else:
        group = json.loads(meta.get("malignant_classes", "[]"))
        steps.append(f"diagnosis argmax(log(probabilities) + class_bias) over {len(classes)} classes; malignant if "
                     f"p_malignant = the sum of {group} >= {float(meta['decision_threshold']):.4f} (probabilities "
                     f"are calibrated, T = {float(meta['temperature']):.4g}); read the graph's decision outputs")
    if CAM_OUTPUT in json.loads(meta.get("output_names", "[]")):
        steps.append(f"optional output '{CAM_OUTPUT}' [N, h, w]: each layer4 cell's share of the log-odds of "
                     f"'{meta['positive_class']}' (upsample to the crop; docs/EMBEDDING.md)")
    return ";\n          ".join(steps)


def _graph_problems(meta: dict[str, str], inputs: list[Tensor], outputs: list[Tensor]) -> list[str]:
    """Does the graph match what its metadata promises?"""
    problems = []
    if len(inputs) != 1:
        return [f"the graph has {len(inputs)} inputs; the contract has one"]
    tensor = inputs[0]
    dtype, layout = meta.get("input_dtype", "float32"), meta["input_layout"]
    if tensor.name != meta["input_name"]:
        problems.append(f"graph input is '{tensor.name}', metadata 'input_name' says '{meta['input_name']}'")
    if tensor.dtype != dtype:
        problems.append(f"graph input is {tensor.dtype}, metadata says {dtype}")
    if len(tensor.shape) != 4:
        problems.append(f"graph input has rank {len(tensor.shape)}, expected 4 ({layout})")
    else:
        channels = tensor.shape[1] if layout == "NCHW" else tensor.shape[3]
        spatial = tensor.shape[2:] if layout == "NCHW" else tensor.shape[1:3]
        if channels != 3:
            problems.append(f"graph input has {channels} channels where {layout} needs 3")
        if layout == "NCHW" and any(d != int(meta["image_size"]) for d in spatial if isinstance(d, int)):
            problems.append(f"graph input is {tensor.shape}, metadata 'image_size' is {meta['image_size']}")
    names = json.loads(meta["output_names"])
    if [t.name for t in outputs] != names:
        problems.append(f"graph outputs are {[t.name for t in outputs]}, metadata 'output_names' says {names}")
    n_classes = len(json.loads(meta["classes"]))
    members = json.loads(meta["ensemble"])["members"] if "ensemble" in meta else None
    expected = {t.name: members if t.name == MEMBER_OUTPUT else n_classes for t in outputs}
    problems += [f"output '{t.name}' has shape {t.shape}; expected [batch, {expected[t.name]}]"
                 for t in outputs if t.name not in (CAM_OUTPUT, OOD_OUTPUT, *DECISION_OUTPUTS)
                 and (len(t.shape) != 2 or t.shape[1] != expected[t.name])]
    problems += [f"output '{t.name}' has shape {t.shape}; expected [batch]"
                 for t in outputs if t.name in (OOD_OUTPUT, *DECISION_OUTPUTS) and len(t.shape) != 1]
    problems += [f"output '{t.name}' has shape {t.shape}; expected [batch, height, width]"
                 for t in outputs if t.name == CAM_OUTPUT and len(t.shape) != 3]
    return problems


def ensemble_summary(meta: dict[str, str]) -> list[str]:
    """`info` lines for a fold ensemble and/or TTA (empty for a plain model)."""
    lines = []
    if "ensemble" in meta:
        e = json.loads(meta["ensemble"])
        oof = e.get("oof") or {}
        aucs = ", ".join(f"{a:.3f}" if isinstance(a, (int, float)) else "n/a" for a in e.get("fold_val_auc", []))
        ci = oof.get("roc_auc_ci") or [None, None]
        lines.append(f"ensemble  {e['members']} members (folds of run '{e.get('run', '?')}'), {e.get('combination')}; "
                     f"fold val AUC [{aucs}]; OOF AUC {_f(oof.get('roc_auc'))} [{_f(ci[0])}, {_f(ci[1])}] on "
                     f"{oof.get('n', '?')} images; '{MEMBER_OUTPUT}' [N, {e['members']}] per member")
    if "tta" in meta:
        t = json.loads(meta["tta"])
        lines.append(f"tta       {t.get('mode')}: mean logits over {t.get('views')} views "
                     f"({', '.join(t.get('transforms', []))})")
    if OOD_THRESHOLD_KEY in meta:
        o = _json_object(meta.get(OOD_KEY, "{}"))
        fit = o.get("threshold_fit") or {}
        accepted = fit.get("accepted")
        lines.append(f"ood       '{OOD_OUTPUT}' {o.get('method', '?')} ({o.get('covariance', '?')}); refused above "
                     f"{meta[OOD_THRESHOLD_KEY]} ({OOD_REFUSAL!r}), which accepts "
                     f"{f'{accepted:.1%}' if isinstance(accepted, float) else '?'} of {fit.get('n', '?')} "
                     f"{fit.get('split', '?')} images (docs/SAFETY.md)")
    if DECISION_KEY in meta:  # what the decision outputs mean: an app reads them, it compares nothing itself
        meaning = _json_object(meta[DECISION_KEY])
        lines += [f"{'decision' if i == 0 else '':<9} '{name}' {meaning.get(name, '?')}"
                  for i, name in enumerate(n for n in DECISION_OUTPUTS if n in meaning)]
    return lines


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"


def inspect_model(path: str | os.PathLike[str], provider: str = "cpu") -> ModelInfo:
    """Everything ``info`` prints; raises :class:`ModelFileError` only for files that are not ONNX."""
    from .runtime import create_session

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX model not found: {path}")
    header = read_header(path)
    session, _ = create_session(path, provider)

    def tensors(args) -> list[Tensor]:
        return [Tensor(a.name, _ORT_TYPES.get(a.type, a.type), list(a.shape)) for a in args]

    inputs, outputs = tensors(session.get_inputs()), tensors(session.get_outputs())
    meta = header.metadata
    try:
        problems = validate(meta)
        ours = True
    except NotOurs:
        problems, ours = [], False
    if ours and not problems:
        problems = _graph_problems(meta, inputs, outputs)
    return ModelInfo(str(path), path.stat().st_size, file_sha256(path), header.ir_version, header.opsets,
                     header.producer, inputs, outputs, meta, ours, problems)


def schema_error(info: ModelInfo) -> ModelFileError | None:
    """The one-line error ``info`` exits with, or None for a valid skinonnx model."""
    if not info.ours:
        return ModelFileError(f"{info.path}: not a skinonnx model: no '{SCHEMA_KEY}' metadata key "
                              "(predict/test can still use it with --image-size, --mean and --std)")
    if info.problems:
        return ModelFileError(f"{info.path}: skinonnx metadata does not validate: " + "; ".join(info.problems))
    return None
