"""The ONNX file as the service sees it: v2 tensor metadata, image bytes -> model input, one batched run.

Images go through the one decoder and the one preprocessing that `predict` uses (:meth:`Preprocessing.from_file`
on the uploaded bytes), so the service's probability equals `predict`'s for the same file.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import ImageError, ModelFileError
from ...hashing import file_sha256
from ...softmax import softmax
from ..cam_overlays import cam_caption, model_crop, relative_to_threshold
from ..contract import CAM_OUTPUT, OOD_OUTPUT
from ..decision import DECISION_DOC, decide, label_text, malignancy
from ..runtime import OnnxClassifier
from .problems import bad_request

#: ONNX Runtime type -> Open Inference Protocol datatype (and the numpy dtype both mean)
V2_DATATYPES = {"tensor(float)": ("FP32", np.float32), "tensor(uint8)": ("UINT8", np.uint8),
                "tensor(float16)": ("FP16", np.float16), "tensor(double)": ("FP64", np.float64),
                "tensor(int64)": ("INT64", np.int64), "tensor(int32)": ("INT32", np.int32),
                "tensor(int8)": ("INT8", np.int8), "tensor(bool)": ("BOOL", np.bool_)}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # v2 name, e.g. FP32
    dtype: np.dtype
    shape: tuple[int, ...]  # -1 for a dynamic axis (the batch axis first)

    def metadata(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def _spec(arg) -> TensorSpec:
    if arg.type not in V2_DATATYPES:
        raise ModelFileError(f"tensor '{arg.name}' has type {arg.type}, which the service cannot carry")
    datatype, dtype = V2_DATATYPES[arg.type]
    return TensorSpec(arg.name, datatype, np.dtype(dtype),
                      tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape))


class ServedModel:
    """One :class:`OnnxClassifier` plus what the service needs around it. ``run`` is thread-safe (ORT is)."""

    def __init__(self, classifier: OnnxClassifier, name: str) -> None:
        self.classifier = classifier
        self.name = name
        self.path = Path(classifier.path)
        self.sha256 = file_sha256(self.path)
        session = classifier.session
        self.input = _spec(session.get_inputs()[0])
        self.outputs = [_spec(o) for o in session.get_outputs()]
        batch = self.input.shape[0]
        self._fixed_batch = batch if batch > 0 else None

    @property
    def contract(self):
        return self.classifier.contract

    def metadata(self, versions: list[str]) -> dict[str, object]:
        """The v2 model metadata response."""
        return {"name": self.name, "versions": versions, "platform": "onnxruntime_onnx",
                "inputs": [self.input.metadata()], "outputs": [o.metadata() for o in self.outputs],
                "parameters": {"sha256": self.sha256, "classes": list(self.contract.classes),
                               "positive_class": self.contract.positive_class,
                               "malignant_classes": list(self.contract.malignant_classes),
                               "class_bias": None if self.contract.class_bias is None
                               else list(self.contract.class_bias),
                               "threshold": self.contract.threshold,
                               "threshold_policy": self.contract.threshold_policy,
                               "ood_threshold": self.contract.ood_threshold,
                               "decision": DECISION_DOC}}

    # --- inputs ----------------------------------------------------------------------------------
    def check_tensor(self, array: np.ndarray, *, max_rows: int) -> None:
        """A v2 input tensor's shape against the graph (rank, fixed axes, batch size); 400 if it does not fit."""
        want = self.input.shape
        if array.ndim != len(want):
            raise bad_request("wrong_shape", f"input '{self.input.name}' has shape {list(array.shape)}; the model "
                                             f"takes {list(want)} (-1: any size)")
        bad = [i for i, (got, need) in enumerate(zip(array.shape, want, strict=True)) if need > 0 and got != need]
        if bad:
            raise bad_request("wrong_shape", f"input '{self.input.name}' has shape {list(array.shape)}; axis "
                                             f"{bad[0]} must be {want[bad[0]]} (model input {list(want)})")
        if not 1 <= array.shape[0] <= max_rows:
            raise bad_request("wrong_shape", f"input '{self.input.name}' has a batch of {array.shape[0]}; this "
                                             f"server takes 1 to {max_rows} rows per request")
        if self.classifier.takes_uint8:
            size = self.classifier.preprocessing.image_size
            if min(array.shape[1:3]) < size:
                raise bad_request("wrong_shape", f"input '{self.input.name}' is {array.shape[1]}x{array.shape[2]}"
                                                 f"; the model crops {size}x{size} and needs at least that")

    def image_input(self, data: bytes, max_pixels: int) -> np.ndarray:
        """Uploaded image bytes -> one row of model input [1, ...] through `predict`'s own decoding path."""
        with _spooled(data) as path:
            try:
                prep = self.classifier.preprocessing
                row = (prep.pixels_from_file(path, max_pixels) if self.classifier.takes_uint8
                       else prep.from_file(path, max_pixels))
            except ImageError as exc:
                raise bad_request("bad_image", exc.problem) from None
            except MemoryError:
                raise bad_request("bad_image", "out of memory while decoding the image") from None
        return row[None]

    def crop(self, data: bytes, max_pixels: int):
        """The pixels the model saw, for a CAM overlay."""
        with _spooled(data) as path:
            return model_crop(path, self.classifier.preprocessing, max_pixels)

    # --- running ---------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every graph output for ``batch``; a fixed-batch graph runs in padded chunks like `predict`."""
        session, feed_name = self.classifier.session, self.input.name
        batch = np.ascontiguousarray(batch, self.input.dtype)
        step = self._fixed_batch
        try:
            if step is None or len(batch) == step:
                outs = session.run(None, {feed_name: batch})
            else:
                parts = []
                for start in range(0, len(batch), step):
                    part = batch[start:start + step]
                    pad = np.zeros((step - len(part), *part.shape[1:]), batch.dtype)
                    parts.append([o[:len(part)] for o in session.run(None, {feed_name: np.concatenate([part, pad])})])
                outs = [np.concatenate([p[k] for p in parts]) for k in range(len(self.outputs))]
        except Exception as exc:  # ORT's own exception types: the input did not fit the graph
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise bad_request("model_rejected_input", f"the model could not run on a "
                                                      f"{'x'.join(map(str, batch.shape))} input ({first})") from None
        return {spec.name: out for spec, out in zip(self.outputs, outs, strict=True)}

    def warm_up(self) -> None:
        """One run on a zero input, so the first request does not pay ORT's first-call allocations."""
        size = self.classifier.preprocessing.image_size
        spatial = (1, 2) if self.classifier.takes_uint8 else (2, 3)
        shape = [size if i in spatial and d < 0 else max(d, 1) for i, d in enumerate(self.input.shape)]
        self.run(np.zeros(shape, self.input.dtype))

    # --- answers ---------------------------------------------------------------------------------
    def probabilities(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Per-class probabilities (float64), exactly as :meth:`OnnxClassifier.run_outputs` makes them."""
        if "probabilities" in outputs:
            return np.asarray(outputs["probabilities"], np.float64)
        return np.asarray(softmax(outputs[self.outputs[0].name], self.contract.temperature), np.float64)

    def classification(self, outputs: dict[str, np.ndarray]) -> dict[str, object]:
        """The image endpoint's answer for one row of outputs: the graph's decision (an image that is not in
        distribution is "not assessed", its probabilities kept for auditing)."""
        contract = self.contract
        probs = self.probabilities(outputs)
        label, inside = (int(v[0]) for v in decide({**outputs, "probabilities": probs}, contract))
        p_malignant, malignant = (v[0] for v in malignancy({**outputs, "probabilities": probs}, contract))
        # two classes: the positive class's probability; more: the malignancy group's (named by its classes)
        answer: dict[str, object] = {
            "label": label_text(contract, label, bool(inside)), "in_distribution": bool(inside),
            "positive_class": " + ".join(contract.malignant_classes) if contract.multiclass
            else contract.positive_class,
            "probability": float(p_malignant) if contract.multiclass else float(probs[0, contract.positive_index]),
            "probabilities": {c: float(p) for c, p in zip(contract.classes, probs[0], strict=True)},
            "p_malignant": float(p_malignant), "malignant": bool(malignant),
            "malignant_classes": list(contract.malignant_classes),
            "threshold": contract.threshold, "threshold_policy": contract.threshold_policy,
            "model": {"name": self.name, "sha256": self.sha256}}
        if "member_probabilities" in outputs:
            answer["member_probabilities"] = [float(v) for v in outputs["member_probabilities"][0]]
        if self.classifier.has_ood and OOD_OUTPUT in outputs:
            answer.update({"ood_score": float(outputs[OOD_OUTPUT][0]), "ood_threshold": self.classifier.ood_threshold})
        return answer

    def cam_png(self, outputs: dict[str, np.ndarray], data: bytes, max_pixels: int) -> bytes:
        """The CAM overlay PNG, drawn as `predict --cam` draws it (relative to the threshold)."""
        from ...overlay import normalize_map, peak_point, render_overlay

        if CAM_OUTPUT not in outputs:
            raise bad_request("no_cam", f"model '{self.name}' has no '{CAM_OUTPUT}' output (re-export it with "
                                        "`skinonnx export` to get overlays)")
        contract, pos = self.contract, self.contract.positive_index
        cam = np.asarray(outputs[CAM_OUTPUT][0], np.float32)
        if "logits" in outputs and not contract.multiclass:  # K > 2: the raw map (the first malignancy class's)
            logits = np.asarray(outputs["logits"][0], np.float64)
            cam = relative_to_threshold(cam, float(logits[pos] - logits[1 - pos]), contract.threshold,
                                        contract.temperature)
        answer = self.classification(outputs)
        crop = self.crop(data, max_pixels)
        caption = cam_caption("upload", float(answer["probability"]), contract.positive_class, str(answer["label"]),
                              cam, self.classifier.preprocessing.image_size)
        panel = render_overlay(crop, normalize_map(cam), peak_point(cam, crop.size[0]), caption)
        buffer = io.BytesIO()
        panel.save(buffer, format="PNG")
        return buffer.getvalue()


class _spooled:
    """The bytes as a short-lived private file (RAM-backed /dev/shm where there is one), so decoding is
    literally `predict`'s: the same :func:`load_rgb` checks, JPEG draft scale and pixel limit."""

    _DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __enter__(self) -> str:
        fd, self.path = tempfile.mkstemp(prefix="skinonnx-serve-", dir=self._DIR)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.data)
        return self.path

    def __exit__(self, *exc: object) -> None:
        os.unlink(self.path)
