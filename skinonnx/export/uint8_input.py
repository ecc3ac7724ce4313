"""`export --embed-preprocessing`: a variant that takes decoded, resized uint8 RGB images.

The float model's nodes are kept as they are; a small preprocessing graph is put in front:

    image  uint8 [N, H, W, 3]  (RGB, shorter side resized to resize_size; or already cropped)
      -> centre crop S x S: start = Round((side - S) / 2)   (ONNX Round: halves to even, like Python)
      -> Reshape to [N, S, S, 3]                            (fails at run time if a side was < S)
      -> Cast float32 -> Mul scale -> Add bias               (Preprocessing.normalization_constants: the
                                                           same float32 constants and operations as numpy)
      -> Transpose to NCHW -> the float model

So an app only decodes and resizes. Resizing stays outside the graph on purpose: ONNX
``Resize`` cannot reproduce Pillow's antialiased 8-bit bilinear filter, and the model's
validated metrics hold only for the pixels it was evaluated on. No torch here (onnx + ORT).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..data.preprocessing import Preprocessing
from ..deploy.contract import UINT8_INPUT, ModelContract
from ..deploy.runtime import create_session
from ..errors import ImageError, SkinOnnxError
from .checks import Comparison, check_variant_graph, rule_of, run_outputs, write_metadata

UINT8_ATOL = 1e-5  # the bound on probabilities; the measured difference is 0 or ~1e-7
_NORMALIZED = "normalized_input"  # the float model's input, now an intermediate tensor


def uint8_path_for(float_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.uint8.onnx``."""
    path = Path(float_path)
    return path.with_name(f"{path.stem}.uint8.onnx")


def _const(name: str, values: object, dtype: type) -> TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def embed_preprocessing(model: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """Return a copy of the float-input ``model`` whose input is uint8 NHWC RGB pixels."""
    prep = contract.preprocessing
    s = prep.image_size
    scale, bias = prep.normalization_constants()
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    old = graph.input[0].name
    spec = UINT8_INPUT
    for node in graph.node:
        node.input[:] = [_NORMALIZED if name == old else name for name in node.input]
    batch = graph.input[0].type.tensor_type.shape.dim[0].dim_param or "batch"
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(spec.name, TensorProto.UINT8, [batch, "height", "width", 3]))
    graph.initializer.extend([
        _const("pre_hw_start", [1], np.int64), _const("pre_hw_end", [3], np.int64),
        _const("pre_crop_size", [s, s], np.int64), _const("pre_two", 2.0, np.float32),
        _const("pre_hw_axes", [1, 2], np.int64), _const("pre_fixed_shape", [0, s, s, 3], np.int64),
        _const("pre_scale", scale, np.float32), _const("pre_bias", bias, np.float32),
    ])
    pre = [
        helper.make_node("Shape", [spec.name], ["pre_shape"]),
        helper.make_node("Slice", ["pre_shape", "pre_hw_start", "pre_hw_end"], ["pre_hw"]),
        helper.make_node("Sub", ["pre_hw", "pre_crop_size"], ["pre_excess"]),
        helper.make_node("Cast", ["pre_excess"], ["pre_excess_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["pre_excess_f", "pre_two"], ["pre_half"]),
        helper.make_node("Round", ["pre_half"], ["pre_start_f"]),  # round half to even
        helper.make_node("Cast", ["pre_start_f"], ["pre_start"], to=TensorProto.INT64),
        helper.make_node("Add", ["pre_start", "pre_crop_size"], ["pre_end"]),
        helper.make_node("Slice", [spec.name, "pre_start", "pre_end", "pre_hw_axes"], ["pre_cropped"]),
        # element count must be N*S*S*3: the one runtime check ONNX offers against a side < S
        helper.make_node("Reshape", ["pre_cropped", "pre_fixed_shape"], ["pre_crop"]),
        helper.make_node("Cast", ["pre_crop"], ["pre_float"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["pre_float", "pre_scale"], ["pre_scaled"]),
        helper.make_node("Add", ["pre_scaled", "pre_bias"], ["pre_normalized"]),
        helper.make_node("Transpose", ["pre_normalized"], [_NORMALIZED], perm=[0, 3, 1, 2]),
    ]
    nodes = [*pre, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    write_metadata(out, replace(contract, input_spec=spec).to_metadata(),
                   f"ResNet50 {contract.classes[0]} vs {contract.classes[1]} classifier. Input '{spec.name}': RGB "
                   f"uint8 NHWC, shorter side resized to {prep.resize_size} (or already cropped to {s}x{s}); crop, "
                   f"scaling and normalisation happen in the graph. Outputs {', '.join(o.name for o in graph.output)}.")
    check_variant_graph(out, "uint8-input")
    return out


def check_uint8_parity(float_path: str | os.PathLike[str], uint8_path: str | os.PathLike[str],
                       paths: Sequence[str | os.PathLike[str]], prep: Preprocessing, *, atol: float = UINT8_ATOL,
                       provider: str = "cpu") -> Comparison:
    """Both models on the same real files: the float model on the shared preprocessing, the uint8 model
    once on each resized, uncropped image (the graph crops; batch 1) and once on a batch of cropped images.
    Probabilities are held to ``atol``; logits and the map are reported."""
    resized = []
    for path in paths:
        try:
            resized.append(prep.load_resized(path))
        except ImageError:
            continue
    if not resized:
        raise SkinOnnxError("the uint8 parity check needs real images, and none of the given ones could be read")
    cropped = np.stack([np.asarray(prep.center_crop(image), dtype=np.uint8) for image in resized])
    expected = run_outputs(create_session(float_path, provider)[0], np.stack([prep.normalize(c) for c in cropped]),
                           len(cropped))
    session, used = create_session(uint8_path, provider)
    feed = session.get_inputs()[0].name
    singles = [dict(zip(expected, session.run(list(expected), {feed: np.asarray(image, dtype=np.uint8)[None]}),
                        strict=True)) for image in resized]
    report = Comparison(f"uint8-input variant vs float model on {len(resized)} real images", len(resized), used)
    report.add(expected, {k: np.concatenate([one[k] for one in singles]) for k in expected}, {"probabilities": atol},
               batch_size=1)
    batched = run_outputs(session, cropped, len(cropped))
    report.add(expected, batched, {"probabilities": atol}, batch_size=len(cropped))
    report.add_decisions(expected, batched, rule_of(float_path), {"probabilities": atol})
    return report.require("uint8 parity")
