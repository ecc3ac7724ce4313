"""Checkpoint -> self-describing ONNX file, checked, parity-tested, written atomically."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from .. import __version__
from ..atomic import atomic_path, onnx_output
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.preprocessing import Preprocessing
from ..data.training_data import model_data
from ..deploy.contract import (
    CAM_OUTPUT,
    DECISION_OUTPUTS,
    INPUT_NAME,
    MEMBER_OUTPUT,
    OOD_OUTPUT,
    OUTPUT_NAMES,
    ModelContract,
)
from ..errors import ExportError, ShapeError
from ..hashing import file_sha256
from ..reporting.provenance import parity_record_path, write_parity_record
from ..training.checkpoint import load_checkpoint, malignant_group, model_from_checkpoint
from .cam import has_cam_head, logits_and_cam
from .checks import Comparison, load_parity_images, real_images, write_metadata
from .decision import add_decision_outputs, with_decision_outputs
from .ood import DEFAULT_OOD_ACCEPT, fit_for_checkpoint, has_pooled_features, reference_ood_scores
from .parity import DEFAULT_ATOL, check_parity
from .uint8_input import check_uint8_parity, uint8_path_for
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
    """A written export: single model, TTA or fold ensemble (``members`` > 1)."""

    path: Path
    contract: ModelContract
    parity: Comparison | None = None
    seconds: float = 0.0
    uint8_path: Path | None = None  # --embed-preprocessing variant
    uint8_parity: Comparison | None = None
    members: int = 1
    tta: str = "none"


def skipped_after_training(state: dict[str, Any], checkpoint_path: Path) -> str | None:
    """What a checkpoint lacks when its run never reached the steps after training (Ctrl-C, SIGTERM, a kill, or a
    best.pt taken mid-run), in one sentence; None for a finished run's best.pt."""
    if "decision" in state:
        return None
    from ..training.runs import unfinished

    config = state.get("config") or {}
    run = checkpoint_path.resolve().parent.parent
    why = unfinished(run) if (run / "state.json").is_file() else None
    policy = config.get("threshold_policy", "youden")
    return (f"its run {run.name} {why or 'did not finish'}, before the steps after training: no temperature "
            f"scaling (T = 1, probabilities uncalibrated) and no threshold policy `{policy}` (the fixed threshold "
            f"0.5 instead). `train --resume {run.name}` finishes the run")


def contract_from_checkpoint(state: dict[str, Any], checkpoint_path: Path, opset: int) -> ModelContract:
    decision = state.get("decision") or {"policy": "fixed:0.5", "threshold": 0.5}
    skipped = skipped_after_training(state, checkpoint_path)
    calibration = state.get("calibration") or {"temperature": 1.0, **({"skipped": skipped} if skipped else {})}
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
    classes, group = tuple(state["classes"]), tuple(sorted(malignant_group(state)))
    bias = None
    if len(classes) > 2:  # the diagnosis: argmax(log p + offsets); all zero when not tuned
        bias = tuple(float(b) for b in (state.get("class_bias") or {}).get("offsets") or [0.0] * len(classes))
    positive = group[0] if state.get("positive_index") is None else int(state["positive_index"])
    return ModelContract(classes=classes, positive_index=positive, malignant_group=group if len(classes) > 2 else (),
                         class_bias=bias, preprocessing=Preprocessing.from_dict(state["preprocessing"]),
                         threshold=float(decision["threshold"]), threshold_policy=str(decision["policy"]),
                         temperature=float(calibration.get("temperature", 1.0)), extra=extra)


def to_onnx(model: nn.Module | None, contract: ModelContract, path: Path, opset: int, *,
            wrapper: nn.Module | None = None) -> onnx.ModelProto:
    """Trace, attach metadata, run the checker and strict shape inference; save to ``path``.

    ``contract.output_names`` says whether the ``cam`` output is wanted (see :func:`contract_with_cam`).
    ``wrapper``: a module to trace instead of :class:`ExportWrapper` around ``model`` (ensembles, TTA); its
    outputs are ``contract.output_names`` before the decision outputs, which :mod:`.decision` appends.
    """
    size = contract.preprocessing.image_size
    contract = with_decision_outputs(contract)
    output_names = [n for n in contract.output_names if n not in DECISION_OUTPUTS]
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
    add_decision_outputs(proto, contract)
    kind = (f"{contract.classes[0]} vs {contract.classes[1]}" if len(contract.classes) == 2 else
            f"{len(contract.classes)}-class ({', '.join(contract.classes)}; malignant: "
            f"{', '.join(contract.malignant_classes)})")
    write_metadata(proto, contract.to_metadata(), f"ResNet50 {kind} "
                   f"classifier. Input: RGB NCHW float32 {size}x{size}, preprocessed as in metadata; outputs "
                   f"{', '.join(contract.output_names)}.")
    onnx.save(proto, str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
        inferred = onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"exported graph failed the ONNX checker: {exc}") from None
    for out in inferred.graph.output:
        dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
        if out.name in (OOD_OUTPUT, *DECISION_OUTPUTS):
            if len(dims) != 1:
                raise ShapeError(f"output '{out.name}' has shape {dims}; expected [batch]")
            continue
        if out.name == CAM_OUTPUT:
            if len(dims) != 3:
                raise ShapeError(f"output '{out.name}' has shape {dims}; expected [batch, height, width]")
            continue
        width = json.loads(contract.extra.get("ensemble", "{}")).get("members") if out.name == MEMBER_OUTPUT \
            else len(contract.classes)  # member_probabilities: one column per member
        if len(dims) != 2 or dims[1] != width:
            raise ShapeError(f"output '{out.name}' has shape {dims}; expected [batch, {width}]")
    return proto


def parity_batch(state: dict[str, Any], data: str | None, limit: int) -> tuple[np.ndarray, list[Path], str]:
    """Real images for parity checks (:func:`.checks.real_images` of ``data``, else the checkpoint's data),
    preprocessed as the checkpoint was trained; also their paths and a description of where they came from."""
    root = model_data(data, state.get("data_root"), needed_for="the parity check")
    config = state.get("config") or {}
    paths, source = real_images(root, limit, seed=int(config.get("seed", 0)), config=config)
    max_pixels = int(config.get("max_pixels", DEFAULT_MAX_PIXELS))  # the limit training used
    batch = load_parity_images(paths, Preprocessing.from_dict(state["preprocessing"]), limit, max_pixels=max_pixels)
    return batch, paths, source


def export(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
           data: str | None = None, atol: float = DEFAULT_ATOL, parity_images: int = 32,
           provider: str = "cpu", embed_preprocessing: bool = False, cam: bool = True, ood: bool = True,
           ood_accept: float = DEFAULT_OOD_ACCEPT, echo=print) -> ExportResult:
    """Export; the file appears under ``output`` only after the checker and parity pass.

    ``cam`` adds the ``cam`` output (:mod:`skinonnx.export.cam`); ONNX Runtime computes it only for
    callers that ask for it.

    ``ood`` adds the ``ood_score`` output and ``ood_threshold`` (:mod:`skinonnx.export.ood`), fitted on the
    training split and on the validation split (``ood_accept`` of it accepted).

    ``embed_preprocessing`` also writes the uint8-input variant (:mod:`skinonnx.export.uint8_input`) beside it,
    parity-checked against the float model; if that fails, neither file is written.
    """
    t0 = time.perf_counter()
    checkpoint, output = Path(checkpoint), onnx_output(output)
    state = load_checkpoint(checkpoint)
    model = model_from_checkpoint(state)
    contract = contract_from_checkpoint(state, checkpoint, opset)
    skipped = skipped_after_training(state, checkpoint)
    if skipped:
        echo(f"warning: exporting {checkpoint} as it is: {skipped}")
    if cam and has_cam_head(model):
        contract = replace(contract, output_names=(*OUTPUT_NAMES, CAM_OUTPUT))
    wrapper = ExportWrapper(model.eval().cpu().to(memory_format=torch.contiguous_format), contract.temperature,
                            contract.positive_index if CAM_OUTPUT in contract.output_names else None)
    if ood and has_pooled_features(model):
        fit = fit_for_checkpoint(model, state, data, accept=ood_accept)
        echo(fit.text())
        contract = fit.contract(contract)
        fit.attach(wrapper, [model])
    return write_checked(
        ExportResult(output, contract), wrapper, lambda tmp, batch: check_parity(
            model, tmp, batch, temperature=contract.temperature, atol=atol, provider=provider,
            extra_reference={OOD_OUTPUT: reference_ood_scores(wrapper, batch)} if hasattr(wrapper, "ood") else None),
        state=state, data=data, opset=opset, parity_images=parity_images, provider=provider,
        embed_preprocessing=embed_preprocessing, echo=echo, t0=t0)


def write_checked(result: ExportResult, wrapper: nn.Module, check: Callable[[Path, np.ndarray], Comparison], *,
                  state: dict[str, Any], data: str | None, opset: int, parity_images: int, provider: str,
                  embed_preprocessing: bool, echo, t0: float) -> ExportResult:
    """Trace ``wrapper`` into ``result.path``, ``check`` it against PyTorch on real images and write the uint8
    variant beside it: single models, TTA and ensembles all go through here, and nothing appears under its
    final name unless every check passed."""
    result.contract = with_decision_outputs(result.contract)
    output, contract, source = result.path, result.contract, ""
    with atomic_path(output) as tmp:
        proto = to_onnx(None, contract, tmp, opset, wrapper=wrapper)
        echo(f"ONNX checker and shape inference: ok (opset {opset})")
        if parity_images > 0 or embed_preprocessing:
            batch, paths, source = parity_batch(state, data, max(parity_images, 1))
            echo(f"parity images: {source}")
        if parity_images > 0:
            result.parity = check(tmp, batch)
            echo(result.parity.text())
        if embed_preprocessing:
            result.uint8_path = uint8_path_for(output)
            with atomic_path(result.uint8_path) as tmp8:
                onnx.save(embed_preprocessing_graph(proto, contract), str(tmp8))
                result.uint8_parity = check_uint8_parity(tmp, tmp8, paths, contract.preprocessing, provider=provider)
                echo(result.uint8_parity.text() + f" [{source}]")
    if result.parity is not None:  # the report card reads it; it names the file's SHA-256, so it cannot go stale
        write_parity_record(output, result.parity.to_dict(), source=source)
    else:
        parity_record_path(output).unlink(missing_ok=True)
    result.seconds = time.perf_counter() - t0
    return result
