"""Fold ensembles and test-time augmentation (TTA) in one ONNX graph, parity-checked like a single model.

The graph keeps the single-model interface (input ``input`` float32 [N, 3, S, S]) and computes

    views   = the TTA views of the batch: identity (none), + horizontal flip (flip), or all 8
              dihedral transforms (d4: flips and transposes, i.e. the right-angle rotations and mirrors)
    z_k     = mean over the views of member k's logits                       (k = 1..K)
    logits  = mean over the members of z_k                                   [N, 2]
    probabilities        = softmax(logits / T)                               [N, 2]
    member_probabilities = softmax(z_k / T)[:, positive], one column per member   [N, K] (ensembles only)

Why the mean of logits (a geometric mean of the members' odds), not the mean of probabilities: the
ensemble then keeps the contract every skinonnx model has, ``probabilities = softmax(logits / T)``
with the raw ``logits`` output as the uncalibrated score, so `test`'s before/after calibration and
every app's use of ``temperature`` work unchanged; and one temperature T, fitted on the out-of-fold
logits (each a single member's), applies to a quantity on the same scale. For two classes the two
rules rank images almost identically (both are monotone in the members' scores) and differ only
when members disagree strongly.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path, ensure_writable_dir
from ..deploy.contract import MEMBER_OUTPUT, OUTPUT_NAMES, ModelContract
from ..errors import ExportError, SkinOnnxError
from ..evaluation.provenance import parity_record_path, write_parity_record
from ..training.checkpoint import load_checkpoint, model_from_checkpoint
from .parity import DEFAULT_ATOL, ParityReport, compare_with_reference

TTA_MODES = {"none": 1, "flip": 2, "d4": 8}


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of an NCHW batch (square images): flips are Slice, the transpose swaps H and W."""
    if mode == "none":
        return [x]
    if mode == "flip":
        return [x, x.flip(3)]
    if mode == "d4":
        t = x.transpose(2, 3)
        return [x, x.flip(3), x.flip(2), x.flip(2).flip(3), t, t.flip(3), t.flip(2), t.flip(2).flip(3)]
    raise SkinOnnxError(f"unknown TTA mode '{mode}' (choose {', '.join(TTA_MODES)})")


class EnsembleWrapper(nn.Module):
    """K members x V views -> (logits, probabilities[, member_probabilities]); see the module docstring."""

    def __init__(self, members: list[nn.Module], temperature: float, positive_index: int, tta: str = "none",
                 member_output: bool = True, n_classes: int = 2) -> None:
        super().__init__()
        self.members = nn.ModuleList(m.eval().cpu().to(memory_format=torch.contiguous_format) for m in members)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.tta, self.views = tta, TTA_MODES[tta]
        self.positive_index, self.member_output, self.n_classes = positive_index, member_output, n_classes
        self.eval()

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, K, C]: each member's logits averaged over the TTA views."""
        views = tta_views(x, self.tta)
        batch = torch.cat(views, 0) if len(views) > 1 else x
        per_member = []
        for member in self.members:
            z = member(batch)
            if self.views > 1:
                z = z.reshape(self.views, -1, self.n_classes).mean(0)
            per_member.append(z)
        return torch.stack(per_member, 1)

    def forward(self, x: torch.Tensor):
        z = self.member_logits(x)
        logits = z.mean(1)
        probabilities = torch.softmax(logits / self.temperature, dim=1)
        if not self.member_output:
            return logits, probabilities
        members = torch.softmax(z / self.temperature, dim=2)[:, :, self.positive_index]
        return logits, probabilities, members


@torch.no_grad()
def reference_outputs(wrapper: EnsembleWrapper, batch: np.ndarray) -> dict[str, np.ndarray]:
    """What the graph must output, computed by PyTorch member by member (fp32 models, float64 combination)."""
    wrapper.eval()  # torch.onnx.export restores the mode it found, which a caller may have left in training
    x = torch.from_numpy(batch)
    views = tta_views(x, wrapper.tta)
    z = torch.stack([torch.stack([m(v).double() for v in views]).mean(0) for m in wrapper.members], 1)
    t = float(wrapper.temperature)
    logits = z.mean(1)
    out = {"logits": logits.numpy(), "probabilities": torch.softmax(logits / t, 1).numpy()}
    if wrapper.member_output:
        out[MEMBER_OUTPUT] = torch.softmax(z / t, 2)[:, :, wrapper.positive_index].numpy()
    return out


def check_ensemble_parity(wrapper: EnsembleWrapper, onnx_path: str | os.PathLike[str], batch: np.ndarray, *,
                          atol: float = DEFAULT_ATOL, provider: str = "cpu", batch_sizes: tuple[int, ...] = (1, 7),
                          member_names: list[str] | None = None) -> ParityReport:
    """Every output, and every member's column, against PyTorch at batch sizes 1 and 7; raises above ``atol``."""
    names = member_names or [f"member {i}" for i in range(len(wrapper.members))]
    return compare_with_reference(onnx_path, batch, reference_outputs(wrapper, batch), atol=atol, provider=provider,
                                  batch_sizes=batch_sizes, columns={MEMBER_OUTPUT: names})


# --------------------------------------------------------------------------- export


@dataclass
class EnsembleExport:
    path: Path
    contract: ModelContract
    parity: ParityReport | None
    seconds: float
    members: int
    tta: str
    uint8_path: Path | None = None


def _ensemble_contract(run, states: list[dict[str, Any]], opset: int, tta: str) -> ModelContract:
    from .onnx_export import contract_from_checkpoint

    oof = run.oof
    base = contract_from_checkpoint(states[0], run.best_paths[0], opset)
    extra = {k: v for k, v in base.extra.items() if k not in ("source_checkpoint", "source_checkpoint_sha256")}
    members = [{"fold": int(st["fold"]), "checkpoint": str(p.relative_to(run.run_dir)), "sha256": st["best_sha256"],
                "val_auc": st["val_auc"], "best_epoch": st["best_epoch"]} for st, p in zip(run.folds, run.best_paths,
                                                                                             strict=True)]
    ensemble = {"members": len(members), "combination": "mean_logits", "member_output": MEMBER_OUTPUT,
                "temperature_from": "out-of-fold logits", "threshold_from": "out-of-fold calibrated probabilities",
                "run": run.run_dir.name, "folds": members, "fold_val_auc": oof["fold_val_auc"],
                "fold_val_auc_mean": oof["fold_val_auc_mean"], "fold_val_auc_sd": oof["fold_val_auc_sd"],
                "oof": {k: oof[k] for k in ("n", "n_positive", "roc_auc", "roc_auc_ci", "sensitivity", "specificity",
                                            "balanced_accuracy", "threshold", "temperature")}}
    extra.update({"ensemble": json.dumps(ensemble), "calibration": json.dumps({**oof["calibration"],
                                                                               "fitted_on": "out-of-fold"}),
                  "training_metrics": json.dumps({"oof_auc": oof["roc_auc"],
                                                  "fold_val_auc_mean": oof["fold_val_auc_mean"]}),
                  "training_run_dir": str(run.run_dir.resolve()), "training_data": str(run.cv["data_root"]),
                  "source_checkpoint": f"{run.run_dir.name} ({len(members)} folds)"})
    if tta != "none":
        extra["tta"] = tta_metadata(tta)
    return replace(base, threshold=float(oof["threshold"]), threshold_policy=str(oof["threshold_policy"]),
                   temperature=float(oof["temperature"]), extra=extra, output_names=(*OUTPUT_NAMES, MEMBER_OUTPUT))


def tta_metadata(tta: str) -> str:
    return json.dumps({"mode": tta, "views": TTA_MODES[tta], "combination": "mean_logits",
                       "transforms": {"flip": ["identity", "flip_width"], "d4": [
                           "identity", "flip_width", "flip_height", "rotate_180", "transpose", "transpose_flip_width",
                           "transpose_flip_height", "transpose_rotate_180"]}.get(tta, ["identity"])})


def export_cv_run(run_dir: str | os.PathLike[str], output: str | os.PathLike[str], *, tta: str = "none",
                  opset: int = 17, data: str | None = None, atol: float = DEFAULT_ATOL, parity_images: int = 32,
                  provider: str = "cpu", embed_preprocessing: bool = False, echo=print) -> EnsembleExport:
    """A complete CV run -> one ONNX file with all K members (checked, parity-tested, atomic)."""
    from ..training.cv_export import load_complete_run

    t0 = time.perf_counter()
    output = _checked_output(output)
    run = load_complete_run(run_dir)
    states = [load_checkpoint(p) for p in run.best_paths]
    contract = _ensemble_contract(run, states, opset, tta)
    wrapper = EnsembleWrapper([model_from_checkpoint(s) for s in states], contract.temperature,
                              contract.positive_index, tta, member_output=True)
    names = [f"fold-{st['fold']}" for st in run.folds]
    echo(f"ensemble of {len(states)} folds of run '{run.run_dir.name}' (mean logits, OOF temperature "
         f"{contract.temperature:.3f}, threshold {contract.threshold:.4f}){f', TTA {tta}' if tta != 'none' else ''}")
    return _write(wrapper, contract, output, states[0], data or run.cv.get("data_root"), opset, atol,
                  parity_images, provider, embed_preprocessing, names, tta, t0, echo)


def export_single_tta(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], *, tta: str,
                      opset: int = 17, data: str | None = None, atol: float = DEFAULT_ATOL, parity_images: int = 32,
                      provider: str = "cpu", embed_preprocessing: bool = False, echo=print) -> EnsembleExport:
    """One checkpoint with TTA views in the graph (outputs as a plain export: logits, probabilities)."""
    from .onnx_export import contract_from_checkpoint

    t0 = time.perf_counter()
    checkpoint, output = Path(checkpoint), _checked_output(output)
    state = load_checkpoint(checkpoint)
    contract = contract_from_checkpoint(state, checkpoint, opset)
    contract = replace(contract, extra={**contract.extra, "tta": tta_metadata(tta)})
    wrapper = EnsembleWrapper([model_from_checkpoint(state)], contract.temperature, contract.positive_index, tta,
                              member_output=False)
    return _write(wrapper, contract, output, state, data, opset, atol, parity_images, provider, embed_preprocessing,
                  ["model"], tta, t0, echo)


def _checked_output(output: str | os.PathLike[str]) -> Path:
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise SkinOnnxError(f"--output must end in .onnx: {output}")
    ensure_writable_dir(output.parent)
    return output


def _write(wrapper: EnsembleWrapper, contract: ModelContract, output: Path, state: dict[str, Any], data: str | None,
           opset: int, atol: float, parity_images: int, provider: str, embed_preprocessing: bool,
           member_names: list[str], tta: str, t0: float, echo) -> EnsembleExport:
    from .onnx_export import _write_uint8_variant, parity_images_for, to_onnx
    from .uint8_input import uint8_path_for

    result = EnsembleExport(output, contract, None, 0.0, len(wrapper.members), tta)
    source = ""
    with atomic_path(output) as tmp:
        proto = to_onnx(None, contract, tmp, opset, wrapper=wrapper)
        if wrapper.member_output:
            _check_member_shape(proto, len(wrapper.members))
        echo(f"ONNX checker and shape inference: ok (opset {opset})")
        if parity_images > 0:
            batch, source = parity_images_for(state, data, parity_images)
            echo(f"parity images: {source}")
            result.parity = check_ensemble_parity(wrapper, tmp, batch, atol=atol, provider=provider,
                                                  member_names=member_names)
            echo(result.parity.text())
        if embed_preprocessing:
            result.uint8_path, _ = _write_uint8_variant(proto, contract, tmp, uint8_path_for(output), state, data,
                                                        max(parity_images, 1), provider, echo)
    if result.parity is not None:
        write_parity_record(output, result.parity.to_dict(), source=source)
    else:
        parity_record_path(output).unlink(missing_ok=True)
    result.seconds = time.perf_counter() - t0
    return result


def _check_member_shape(proto, k: int) -> None:
    out = next((o for o in proto.graph.output if o.name == MEMBER_OUTPUT), None)
    dims = [] if out is None else [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    if len(dims) != 2 or dims[1] != k:
        raise ExportError(f"output '{MEMBER_OUTPUT}' has shape {dims}; expected [batch, {k}]")


def is_ensemble_or_tta(onnx_path: str | os.PathLike[str]) -> bool:
    from ..deploy.info import read_header

    meta = read_header(onnx_path).metadata
    return "ensemble" in meta or "tta" in meta


def recheck_parity(source: Path | None, onnx_path: str | os.PathLike[str], data: str | None, *,
                   atol: float = DEFAULT_ATOL, n_images: int = 32, provider: str = "cpu",
                   echo=print) -> tuple[ParityReport, str]:
    """`parity` for an ensemble or TTA file: rebuild the same members, views and temperature in PyTorch.

    ``source``: the CV run folder (an ensemble; default: the run its metadata names) or the checkpoint
    (default: the newest run's).
    """
    from ..deploy.info import read_header
    from ..training.cv_export import is_cv_run, load_complete_run
    from .onnx_export import parity_images_for

    meta = read_header(onnx_path).metadata
    tta = json.loads(meta["tta"])["mode"] if "tta" in meta else "none"
    temperature, positive = float(meta["temperature"]), int(meta["positive_index"])
    if "ensemble" in meta:
        run_dir = source if source is not None and is_cv_run(source) else Path(meta.get("training_run_dir", ""))
        run = load_complete_run(run_dir)
        states = [load_checkpoint(p) for p in run.best_paths]
        names = [f"fold-{st['fold']}" for st in run.folds]
        data = data or run.cv.get("data_root")
    else:
        from ..training.runs import resolve_checkpoint

        states, names = [load_checkpoint(source if source is not None else resolve_checkpoint(None)[0])], ["model"]
    wrapper = EnsembleWrapper([model_from_checkpoint(s) for s in states], temperature, positive, tta,
                              member_output="ensemble" in meta)
    batch, where = parity_images_for(states[0], data, n_images)
    echo(f"parity images: {where}")
    return check_ensemble_parity(wrapper, onnx_path, batch, atol=atol, provider=provider, member_names=names), where
