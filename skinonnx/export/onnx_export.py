"""Checkpoint -> self-describing ONNX file, checked, parity-tested, written atomically."""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from .. import __version__
from ..atomic import atomic_path, ensure_writable_dir
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import discover
from ..data.preprocessing import Preprocessing
from ..deploy.contract import CAM_OUTPUT, INPUT_NAME, OOD_OUTPUT, OUTPUT_NAMES, ModelContract
from ..errors import ExportError, ShapeError, SkinOnnxError
from ..evaluation.provenance import parity_record_path, write_parity_record
from ..hashing import file_sha256
from ..training.checkpoint import load_checkpoint, model_from_checkpoint
from .cam import has_cam_head, logits_and_cam
from .ood import DEFAULT_OOD_ACCEPT, fit_for_checkpoint, has_pooled_features, reference_ood_scores
from .parity import DEFAULT_ATOL, ParityReport, check_parity, load_parity_images
from .uint8_input import Uint8Parity, check_uint8_parity, uint8_path_for
from .uint8_input import embed_preprocessing as embed_preprocessing_graph

DEFAULT_OPSET = 17  # read by ONNX Runtime >= 1.14 and TensorRT >= 8.6


class ExportWrapper(nn.Module):
    """Outputs ``logits``, calibrated ``probabilities = softmax(logits / T)`` and, given the positive
    class's index, the ``cam`` map of its log-odds (:mod:`skinonnx.export.cam`), all in the graph."""

    def __init__(self, model: nn.Module, temperature: float = 1.0, positive_index: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.positive_index = positive_index
        self.register_buffer("temperature", torch.tensor(float(temperature)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.positive_index is None:
            logits = self.model(x)
            return logits, torch.softmax(logits / self.temperature, dim=1)
        logits, cam = logits_and_cam(self.model, x, self.positive_index)
        return logits, torch.softmax(logits / self.temperature, dim=1), cam


@dataclass
class ExportResult:
    path: Path
    contract: ModelContract
    parity: ParityReport | None
    seconds: float
    uint8_path: Path | None = None  # --embed-preprocessing variant
    uint8_parity: Uint8Parity | None = None


def contract_from_checkpoint(state: dict[str, Any], checkpoint_path: Path, opset: int) -> ModelContract:
    decision = state.get("decision") or {"policy": "fixed:0.5", "threshold": 0.5}
    calibration = state.get("calibration") or {"temperature": 1.0}
    metrics = {k: v for k, v in (state.get("metrics") or {}).items() if isinstance(v, (int, float))}
    config = state.get("config") or {}
    extra = {
        "model_architecture": state.get("arch", "resnet50"),
        "training_metrics": json.dumps(metrics),
        "calibration": json.dumps(calibration),
        "training_config": json.dumps(config),
        "source_checkpoint": checkpoint_path.name,
        "source_checkpoint_sha256": file_sha256(checkpoint_path),
        "skinonnx_version": __version__,
        "torch_version": torch.__version__,
        "opset": str(opset),
        "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if state.get("data_root"):  # lets `test` default to the data the model was trained on
        extra["training_data"] = str(state["data_root"])
    if config.get("runs_dir") and config.get("name"):  # lets `test` find metrics.csv for the training curves
        extra["training_run_dir"] = str((Path(config["runs_dir"]) / config["name"]).resolve())
    return ModelContract(classes=tuple(state["classes"]), positive_index=int(state["positive_index"]),
                         preprocessing=Preprocessing.from_dict(state["preprocessing"]),
                         threshold=float(decision["threshold"]), threshold_policy=str(decision["policy"]),
                         temperature=float(calibration.get("temperature", 1.0)), extra=extra)


def to_onnx(model: nn.Module | None, contract: ModelContract, path: Path, opset: int, *,
            wrapper: nn.Module | None = None) -> onnx.ModelProto:
    """Trace, attach metadata, run the checker and strict shape inference; save to ``path``.

    ``contract.output_names`` says whether the ``cam`` output is wanted (see :func:`contract_with_cam`).
    ``wrapper``: a module to trace instead of :class:`ExportWrapper` around ``model`` (ensembles, TTA); its
    outputs are ``contract.output_names``.
    """
    size = contract.preprocessing.image_size
    output_names = list(contract.output_names)
    with_cam = CAM_OUTPUT in output_names
    if wrapper is None:
        assert model is not None
        wrapper = ExportWrapper(model.eval().cpu().to(memory_format=torch.contiguous_format), contract.temperature,
                                contract.positive_index if with_cam else None)
    dummy = torch.zeros(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation notice; traced cam grid size
        torch.onnx.export(wrapper, (dummy,), str(path), dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=output_names,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in output_names}},
                          do_constant_folding=True)
    proto = onnx.load(str(path))
    proto.producer_name, proto.producer_version = "skinonnx", __version__
    proto.doc_string = (f"ResNet50 {contract.classes[0]} vs {contract.classes[1]} classifier. Input: RGB "
                        f"NCHW float32 {size}x{size}, preprocessed as in metadata; outputs {', '.join(output_names)}.")
    del proto.metadata_props[:]
    for key, value in contract.to_metadata().items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported graph failed the ONNX checker: {exc}") from None
    for out in inferred.graph.output:
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        if out.name == OOD_OUTPUT:
            if len(dims) != 1:
                raise ShapeError(f"output '{out.name}' has shape {dims}; expected [batch]")
            continue
        if out.name == CAM_OUTPUT:
            if len(dims) != 3:
                raise ShapeError(f"output '{out.name}' has shape {dims}; expected [batch, height, width]")
            continue
        if out.name not in OUTPUT_NAMES:
            continue  # extra outputs (an ensemble's member_probabilities) are checked by their exporter
        if len(dims) != 2 or dims[1] != len(contract.classes):
            raise ShapeError(f"output '{out.name}' has shape {dims}; expected [batch, {len(contract.classes)}]")
    return proto


def parity_paths_for(state: dict[str, Any], data: str | None) -> tuple[list[Path], str]:
    """Real images for parity checks: the validation split of ``data`` or of the checkpoint's data."""
    root = data or state.get("data_root")
    if not root or not Path(root).exists():
        raise SkinOnnxError("parity needs real images: pass --data DIR (the data the model was trained on)")
    found = discover(root, seed=int((state.get("config") or {}).get("seed", 0)), write_split_file=False)
    split = "val" if found.splits.get("val") else next(iter(found.splits))
    return [s.path for s in found.splits[split]], f"{root} ({split} split)"


def parity_images_for(state: dict[str, Any], data: str | None, limit: int) -> tuple[np.ndarray, str]:
    paths, source = parity_paths_for(state, data)
    prep = Preprocessing.from_dict(state["preprocessing"])
    max_pixels = int((state.get("config") or {}).get("max_pixels", DEFAULT_MAX_PIXELS))  # the limit training used
    return load_parity_images(paths, prep, limit, max_pixels=max_pixels), source


def export(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
           data: str | None = None, atol: float = DEFAULT_ATOL, parity_images: int = 32,
           provider: str = "cpu", embed_preprocessing: bool = False, cam: bool = True, ood: bool = True,
           ood_accept: float = DEFAULT_OOD_ACCEPT, echo=print) -> ExportResult:
    """Export; the file appears under ``output`` only after the checker and parity pass.

    ``cam`` adds the ``cam`` output (:mod:`skinonnx.export.cam`); ONNX Runtime computes it only for
    callers that ask for it.

    ``ood`` adds the ``ood_score`` output and ``ood_threshold`` (:mod:`skinonnx.export.ood`), fitted on the
    training split and the validation split (``ood_accept`` of it accepted).

    ``embed_preprocessing`` also writes the uint8-input variant (:mod:`skinonnx.export.uint8_input`) beside it,
    parity-checked against the float model; if that fails, neither file is written.
    """
    t0 = time.perf_counter()
    checkpoint, output = Path(checkpoint), Path(output)
    if output.suffix.lower() != ".onnx":
        raise SkinOnnxError(f"--output must end in .onnx: {output}")
    ensure_writable_dir(output.parent)
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    contract = contract_from_checkpoint(state, checkpoint, opset)
    if cam and has_cam_head(model):
        contract = replace(contract, output_names=(*OUTPUT_NAMES, CAM_OUTPUT))
    wrapper = None
    if ood and has_pooled_features(model):
        model = model.eval().cpu().to(memory_format=torch.contiguous_format)
        wrapper = ExportWrapper(model, contract.temperature,
                                contract.positive_index if CAM_OUTPUT in contract.output_names else None)
        fit = fit_for_checkpoint(model, state, data, accept=ood_accept)
        echo(fit.text())
        contract = fit.contract(contract)
        fit.attach(wrapper, [model])
    report = None
    result = ExportResult(output, contract, None, 0.0)
    with atomic_path(output) as tmp:
        proto = to_onnx(model, contract, tmp, opset, wrapper=wrapper)
        echo(f"ONNX checker and shape inference: ok (opset {opset})")
        if parity_images > 0:
            batch, source = parity_images_for(state, data, parity_images)
            echo(f"parity images: {source}")
            extra = {OOD_OUTPUT: reference_ood_scores(wrapper, batch)} if wrapper is not None else None
            report = check_parity(model, tmp, batch, temperature=contract.temperature, atol=atol, provider=provider,
                                  extra_reference=extra)
            echo(report.text())
        if embed_preprocessing:
            result.uint8_path, result.uint8_parity = _write_uint8_variant(
                proto, contract, tmp, uint8_path_for(output), state, data, max(parity_images, 1), provider, echo)
    if report is not None:  # the report card reads it; it names the file's SHA-256, so it cannot go stale
        write_parity_record(output, report.to_dict(), source=source)
    else:
        parity_record_path(output).unlink(missing_ok=True)
    result.parity, result.seconds = report, time.perf_counter() - t0
    return result


def _write_uint8_variant(proto: onnx.ModelProto, contract: ModelContract, float_path: Path, output: Path,
                         state: dict[str, Any], data: str | None, n_images: int, provider: str,
                         echo) -> tuple[Path, Uint8Parity]:
    variant = embed_preprocessing_graph(proto, contract)
    paths, source = parity_paths_for(state, data)
    with atomic_path(output) as tmp:
        onnx.save(variant, str(tmp))
        parity = check_uint8_parity(float_path, tmp, paths[:n_images], contract.preprocessing, provider=provider)
        echo(parity.text() + f" [{source}]")
    return output, parity
