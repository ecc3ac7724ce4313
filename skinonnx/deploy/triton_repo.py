"""A Triton Inference Server model repository from a skinonnx ONNX file (torch-free).

``DIR/<name>/config.pbtxt`` (platform ``onnxruntime_onnx``, ``max_batch_size``, dims without the batch axis,
every output, dynamic batching), ``DIR/<name>/1/model.onnx`` and ``DIR/<name>/labels.txt`` (the classes, in
output order, for Triton's classification extension on ``probabilities``). The text follows Triton's
``ModelConfig`` protobuf (tests parse it with the one shipped in ``tritonclient``). Triton then serves the same
Open Inference Protocol as `serve`, so a client written against one works with the other (docs/SERVE.md).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..atomic import atomic_path, write_text
from ..errors import ModelFileError
from ..hashing import file_sha256
from .contract import DECISION_KEY
from .runtime import OnnxClassifier
from .serving import settings as serving_settings

#: ONNX Runtime tensor types -> Triton's DataType enum names
TRITON_TYPES = {"tensor(float)": "TYPE_FP32", "tensor(uint8)": "TYPE_UINT8", "tensor(float16)": "TYPE_FP16",
                "tensor(double)": "TYPE_FP64", "tensor(int64)": "TYPE_INT64", "tensor(int32)": "TYPE_INT32",
                "tensor(int8)": "TYPE_INT8", "tensor(bool)": "TYPE_BOOL"}
LABELS_FILE = "labels.txt"
DEFAULT_MAX_BATCH = serving_settings.DEFAULT_MAX_BATCH  # the same batching decision as `serve`
DEFAULT_QUEUE_DELAY_US = int(serving_settings.DEFAULT_MAX_WAIT_MS * 1000)


def _dims(shape: list, batched: bool) -> list[int]:
    dims = shape[1:] if batched else shape
    return [d if isinstance(d, int) and d > 0 else -1 for d in dims]


def _tensor_block(arg, batched: bool, label_file: bool = False) -> str:
    if arg.type not in TRITON_TYPES:
        raise ModelFileError(f"tensor '{arg.name}' has type {arg.type}, which Triton's ONNX backend cannot carry here")
    shape = _dims(list(arg.shape), batched)
    # a per-image scalar ([batch], e.g. ood_score): Triton needs dims, so [ 1 ] reshaped to the model's [ ]
    dims = ", ".join(str(d) for d in shape) or "1"
    reshape = "" if shape else "\n    reshape: { shape: [ ] }"
    label = f'\n    label_filename: "{LABELS_FILE}"' if label_file else ""
    return (f'  {{\n    name: "{arg.name}"\n    data_type: {TRITON_TYPES[arg.type]}\n    dims: [ {dims} ]{reshape}'
            f'{label}\n  }}')


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid protobuf text-format string for what we write


def config_text(classifier: OnnxClassifier, name: str, *, max_batch: int = DEFAULT_MAX_BATCH,
                queue_delay_us: int = DEFAULT_QUEUE_DELAY_US, gpu: bool = False, sha256: str = "") -> str:
    """config.pbtxt for ``classifier``'s file; a graph with a fixed batch axis gets max_batch_size 0."""
    session = classifier.session
    inputs, outputs = session.get_inputs(), session.get_outputs()
    batched = all(not (isinstance(t.shape[0], int) and t.shape[0] > 0) for t in (*inputs, *outputs))
    contract = classifier.contract
    lines = [f"name: {_quote(name)}", 'platform: "onnxruntime_onnx"', f"max_batch_size: {max_batch if batched else 0}",
             "input [", ",\n".join(_tensor_block(t, batched) for t in inputs), "]",
             "output [", ",\n".join(_tensor_block(t, batched, label_file=t.name == "probabilities") for t in outputs),
             "]"]
    if batched:
        lines += ["dynamic_batching {", f"  max_queue_delay_microseconds: {queue_delay_us}", "}"]
    lines += ["instance_group [", f"  {{ count: 1 kind: {'KIND_GPU' if gpu else 'KIND_CPU'} }}", "]"]
    params = {"classes": json.dumps(list(contract.classes)), "positive_class": contract.positive_class,
              "malignant_classes": json.dumps(list(contract.malignant_classes)),
              **({"class_bias": json.dumps(list(contract.class_bias))} if contract.class_bias is not None else {}),
              "decision_threshold": repr(float(contract.threshold)), "threshold_policy": contract.threshold_policy,
              "input_layout": contract.input_spec.layout, "sha256": sha256,
              **({"ood_threshold": repr(contract.ood_threshold)} if contract.ood_threshold is not None else {}),
              **({DECISION_KEY: classifier.metadata[DECISION_KEY]} if DECISION_KEY in classifier.metadata else {})}
    for key, value in params.items():
        lines.append(f"parameters {{ key: {_quote(key)} value {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


def write_triton_repo(onnx_path: str | os.PathLike[str], repo: str | os.PathLike[str], *, name: str | None = None,
                      max_batch: int = DEFAULT_MAX_BATCH, queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
                      gpu: bool = False) -> Path:
    """Write ``repo/<name>/`` (config.pbtxt, 1/model.onnx, labels.txt); returns the model folder.

    Every file is written atomically; an existing model folder of that name is updated in place.
    """
    onnx_path = Path(onnx_path)
    classifier = OnnxClassifier(onnx_path, "cpu", threads=1)  # proves the file loads and keeps the contract
    name = name or onnx_path.stem
    if not name or "/" in name or name.startswith("."):
        raise ModelFileError(f"model name {name!r} cannot be a folder name in a Triton repository")
    folder = Path(repo) / name
    with atomic_path(folder / "1" / "model.onnx") as tmp:
        shutil.copyfile(onnx_path, tmp)
    write_text(folder / LABELS_FILE, "".join(f"{c}\n" for c in classifier.contract.classes))
    write_text(folder / "config.pbtxt", config_text(classifier, name, max_batch=max_batch,
                                                    queue_delay_us=queue_delay_us, gpu=gpu,
                                                    sha256=file_sha256(onnx_path)))
    return folder
