"""The Open Inference Protocol (KServe v2) REST encoding of tensors: JSON ``data`` or the binary tensor
extension (``Inference-Header-Content-Length``) that Triton's clients use by default.

Pure functions: bytes in, arrays out (and back); every malformed request raises a 400 naming the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from .model import TensorSpec
from .problems import bad_request

HEADER_LENGTH = "Inference-Header-Content-Length"
NUMPY_OF = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "UINT8": np.uint8, "INT8": np.int8,
            "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    tensor: np.ndarray  # the model's single input
    outputs: dict[str, bool]  # output name -> return it as binary data


def parse_infer_request(body: bytes, header_length: str | None, model_input: TensorSpec,
                        model_outputs: list[TensorSpec]) -> InferRequest:
    """A v2 inference request for a single-input model -> its input tensor and the outputs asked for."""
    header, binary = _split(body, header_length)
    try:
        request = json.loads(header)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request("bad_json", f"the inference request is not valid JSON ({exc})") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise bad_request("bad_request", "an inference request is a JSON object with an 'inputs' list")
    inputs = request["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        names = [i.get("name") for i in inputs if isinstance(i, dict)]
        raise bad_request("wrong_inputs", f"the model takes one input '{model_input.name}'; the request has "
                                          f"{len(inputs)} ({names})")
    tensor = _tensor(inputs[0], binary, model_input)
    params = request.get("parameters") if isinstance(request.get("parameters"), dict) else {}
    all_binary = bool(params.get("binary_data_output", False))
    known = {o.name for o in model_outputs}
    wanted: dict[str, bool] = {}
    requested = request.get("outputs")
    if requested is None:
        wanted = {o.name: all_binary for o in model_outputs}
    elif not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
        raise bad_request("bad_request", "'outputs' must be a list of objects with a 'name'")
    else:
        for out in requested:
            if out["name"] not in known:
                raise bad_request("unknown_output", f"the model has no output '{out['name']}' "
                                                    f"(it has {sorted(known)})")
            out_params = out.get("parameters") if isinstance(out.get("parameters"), dict) else {}
            wanted[out["name"]] = bool(out_params.get("binary_data", all_binary))
    request_id = request.get("id")
    return InferRequest(None if request_id is None else str(request_id), tensor, wanted)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        length = int(header_length)
    except ValueError:
        raise bad_request("bad_request", f"{HEADER_LENGTH} is not a number: {header_length[:40]!r}") from None
    if not 0 < length <= len(body):
        raise bad_request("bad_request", f"{HEADER_LENGTH} {length} does not fit the {len(body)}-byte body")
    return body[:length], body[length:]


def _tensor(entry: dict, binary: bytes, spec: TensorSpec) -> np.ndarray:
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    if name != spec.name:
        raise bad_request("wrong_input_name", f"the model's input is '{spec.name}', not {name!r}")
    if datatype != spec.datatype:
        raise bad_request("wrong_datatype", f"input '{spec.name}' is {spec.datatype}; the request says {datatype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise bad_request("wrong_shape", f"input '{spec.name}': 'shape' must be a list of non-negative integers")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    dtype = np.dtype(NUMPY_OF[spec.datatype])
    params = entry.get("parameters") if isinstance(entry.get("parameters"), dict) else {}
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or size != len(binary):
            raise bad_request("wrong_shape", f"input '{spec.name}': binary_data_size {size!r} but {len(binary)} "
                                             "bytes follow the JSON header")
        if size != count * dtype.itemsize:
            raise bad_request("wrong_shape", f"input '{spec.name}': shape {shape} of {spec.datatype} needs "
                                             f"{count * dtype.itemsize} bytes, the request has {size}")
        return _finite(np.frombuffer(binary, dtype).reshape(shape), spec)
    if binary:
        raise bad_request("bad_request", "binary data follows the JSON header but no input has binary_data_size")
    if "data" not in entry:
        raise bad_request("bad_request", f"input '{spec.name}' has neither 'data' nor binary data")
    try:
        values = np.asarray(entry["data"], dtype=dtype)
    except (TypeError, ValueError, OverflowError):
        raise bad_request("wrong_datatype", f"input '{spec.name}': 'data' is not a list of {spec.datatype} "
                                            "numbers") from None
    if values.size != count:
        raise bad_request("wrong_shape", f"input '{spec.name}': shape {shape} needs {count} values, 'data' has "
                                         f"{values.size}")
    return _finite(values.reshape(shape), spec)


def _finite(tensor: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Refuse NaN and infinity in a float input (JSON's non-standard NaN/Infinity, or binary data): the model's
    answer would be NaN, which strict JSON parsers cannot read back."""
    if tensor.dtype.kind == "f":
        bad = int(np.count_nonzero(~np.isfinite(tensor)))
        if bad:
            raise bad_request("non_finite", f"input '{spec.name}': {bad} of {tensor.size} values are NaN or "
                                            "infinite; the model needs finite numbers")
    return tensor


def encode_infer_response(model_name: str, version: str, request: InferRequest, outputs: dict[str, np.ndarray],
                          specs: list[TensorSpec]) -> tuple[bytes, dict[str, str]]:
    """The response body and its extra headers (``Inference-Header-Content-Length`` when any output is binary)."""
    datatypes = {s.name: s.datatype for s in specs}
    entries, blobs = [], []
    for name, as_binary in request.outputs.items():
        array = np.ascontiguousarray(outputs[name])
        entry: dict[str, object] = {"name": name, "datatype": datatypes[name], "shape": list(array.shape)}
        if as_binary:
            blob = array.tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.reshape(-1).tolist()
        entries.append(entry)
    response: dict[str, object] = {"model_name": model_name, "model_version": version, "outputs": entries}
    if request.id is not None:
        response["id"] = request.id
    header = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(header))}
