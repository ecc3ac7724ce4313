"""`export --fp16`: a half-precision copy of an fp32 skinonnx file, gated on real validation images.

Weights and activations become float16; the input and both outputs stay float32 (``keep_io_types``),
so an app feeds and reads it exactly like the fp32 file. Half the file size; faster only where the
hardware computes in fp16 (GPUs with tensor cores, mobile NPUs/GPUs via NNAPI/Core ML). On an x86
CPU ONNX Runtime has few fp16 kernels and casts around them: it is *slower* there (benchmarks/runtimes.py).

The conversion is ONNX Runtime's own (``onnxruntime.transformers.float16``), which appends its
input/output casts at the end of the node list; we restore topological order so ``onnx.checker``
accepts the file. The gate compares fp16 with fp32 on the same preprocessed validation images:
all labels must agree at the model's threshold and every probability within ``max_prob_diff``,
else no file is written. No torch here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..deploy.runtime import OnnxClassifier
from ..errors import ExportError
from .checks import Comparison, check_variant_graph, compare_files, load_parity_images, real_images, write_metadata

DEFAULT_MAX_PROB_DIFF = 0.01  # fp16 weights move logits by ~1e-3 relative; probabilities by far less than this
DEFAULT_GATE_IMAGES = 64


def fp16_path_for(fp32_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.fp16.onnx``."""
    path = Path(fp32_path)
    return path.with_name(f"{path.stem}.fp16.onnx")


def topological_sort(graph) -> None:  # onnx.GraphProto
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (in place)."""
    ready = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ExportError(f"fp16 graph has a cycle or a missing input near node '{waiting[0].name}'")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)


def drop_duplicate_nodes(graph) -> None:  # onnx.GraphProto
    """Remove repeated copies of an identical node (same op, inputs, outputs and attributes), in place.

    The converter inserts one ``<tensor>_cast_to_fp32`` Cast per consumer when an fp32 (blocked) tensor
    feeds several blocked nodes, all writing the same name, which breaks single assignment; the copies
    compute the same value, so one is kept."""
    seen, kept = set(), []
    for node in graph.node:
        key = node.SerializeToString(deterministic=True)
        if key not in seen:
            seen.add(key)
            kept.append(node)
    if len(kept) < len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def keep_decisions_float32(graph) -> int:  # onnx.GraphProto
    """Make the converter's fp16 round trips after computing decision nodes no-ops, in place; how many.

    A blocked node runs in float32, but the converter still casts what it writes to fp16 and back before the next
    node reads it; with K classes ``p_malignant`` would be a sum rounded to fp16 and ``label`` the argmax of
    rounded biased log-probabilities, not :class:`~skinonnx.deploy.decision.DecisionRule` on the probabilities.
    Such a Cast to fp16 becomes a Cast to float32 (exact). A ``Gather`` of the probabilities (fp16 values) survives
    the round trip unchanged and is left as written, so a two-class graph stays as before."""
    from onnx import TensorProto

    producers = {out: node for node in graph.node for out in node.output}
    types = {vi.name: vi for vi in graph.value_info}
    changed = 0
    for node in graph.node:
        to = next((a for a in node.attribute if a.name == "to"), None)
        source = producers.get(node.input[0]) if node.op_type == "Cast" and node.input else None
        if (to is None or to.i != TensorProto.FLOAT16 or source is None or not source.name.startswith("decision/")
                or source.op_type == "Gather"):
            continue
        to.i = TensorProto.FLOAT
        if node.output[0] in types:
            types[node.output[0]].type.tensor_type.elem_type = TensorProto.FLOAT
        changed += 1
    return changed


def to_fp16(model):  # onnx.ModelProto -> onnx.ModelProto
    """fp16 weights and activations, fp32 input and outputs; checked by ``onnx.checker`` (full)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from ..deploy.contract import keeps_float32  # the ood_score head and the decision stay float32

    half = convert_float_to_float16(model, keep_io_types=True,
                                    node_block_list=[n.name for n in model.graph.node if keeps_float32(n.name)] or None)
    drop_duplicate_nodes(half.graph)
    keep_decisions_float32(half.graph)
    topological_sort(half.graph)
    check_variant_graph(half, "fp16")
    return half


@dataclass
class Fp16Result:
    path: Path
    gate: Comparison
    seconds: float


def export_fp16(fp32_path: str | os.PathLike[str], data: str | os.PathLike[str], *,
                output: str | os.PathLike[str] | None = None, max_prob_diff: float = DEFAULT_MAX_PROB_DIFF,
                n_images: int = DEFAULT_GATE_IMAGES, provider: str = "cpu", echo=print) -> Fp16Result:
    """Write the fp16 copy of ``fp32_path`` (default ``<stem>.fp16.onnx``) only if it passes the gate (both
    files run on ``provider``)."""
    import onnx

    t0 = time.perf_counter()
    fp32_path = Path(fp32_path)
    output = Path(output) if output else fp16_path_for(fp32_path)
    fp32 = OnnxClassifier(fp32_path, provider)
    if fp32.takes_uint8:
        raise ExportError(f"{fp32_path}: give the float32-input model; its uint8 variant is not converted")
    half = to_fp16(onnx.load(str(fp32_path)))
    paths, source = real_images(data, n_images)
    with atomic_path(output) as tmp:
        onnx.save(half, str(tmp))
        gate = compare_files(fp32_path, tmp, load_parity_images(paths, fp32.preprocessing, n_images),
                             {"probabilities": max_prob_diff}, "fp16 vs fp32", provider=provider)
        echo(gate.text() + f" [{source}]")
        gate.require("fp16 gate", output)
        record = {"weights": "float16", "activations": "float16", "inputs_outputs": "float32",
                  "converter": "onnxruntime.transformers.float16 (keep_io_types)", "gate": gate.to_dict()}
        write_metadata(half, {**fp32.metadata, "precision": json.dumps(record)})
        onnx.save(half, str(tmp))
    return Fp16Result(output, gate, time.perf_counter() - t0)
