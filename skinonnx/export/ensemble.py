"""Fold ensembles and test-time augmentation (TTA) in one ONNX graph, parity-checked like a single model.

The graph keeps the single-model interface (input ``input`` float32 [N, 3, S, S]) and computes

    views   = the TTA views of the batch: identity (none), + horizontal flip (flip), or all 8
              dihedral transforms (d4: flips and transposes, i.e. the right-angle rotations and mirrors)
    z_k     = mean over the views of member k's logits                       (k = 1..K)
    logits  = mean over the members of z_k                                   [N, C]
    probabilities        = softmax(logits / T)                               [N, C]
    member_probabilities = member k's p_malignant: softmax(z_k / T) summed over the malignancy group,
                           one column per member                             [N, K] (ensembles only)

C classes, 2 or more: with two the group is the positive class alone (its column, as before); with more the
group's probabilities are added in class order, as ``p_malignant`` adds them (:mod:`.decision`). The diagnosis
of more than two classes (``label``) uses the class bias tuned on the run's out-of-fold predictions
(``train --class-bias oof``), stored in the file's metadata and graph like a single model's.

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
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import onnx_output
from ..data.preprocessing import Preprocessing
from ..deploy.contract import CAM_OUTPUT, MEMBER_OUTPUT, OOD_OUTPUT, OUTPUT_NAMES, ModelContract
from ..errors import ExportError, SkinOnnxError
from ..training.checkpoint import load_checkpoint, model_from_checkpoint
from ..training.runs import DEFAULT_RUNS_DIR
from .cam import has_cam_head, logits_and_cam, mean_cam
from .checks import Comparison
from .onnx_export import ExportResult, contract_from_checkpoint, parity_batch, write_checked
from .ood import DEFAULT_OOD_ACCEPT, OodFit, fit_for_checkpoint, fit_members, reference_ood_scores
from .parity import DEFAULT_ATOL, compare_with_reference

# each view: (transpose H and W first?, then flip these dims); the d4 list is the dihedral group of the square
VIEWS = {"none": [(False, ())], "flip": [(False, ()), (False, (3,))],
         "d4": [(t, f) for t in (False, True) for f in ((), (3,), (2,), (2, 3))]}
TTA_MODES = {mode: len(views) for mode, views in VIEWS.items()}


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """The views of an NCHW batch (square images): flips are Slice, the transpose swaps H and W."""
    if mode not in VIEWS:
        raise SkinOnnxError(f"unknown TTA mode '{mode}' (choose {', '.join(TTA_MODES)})")
    views = []
    for transpose, flips in VIEWS[mode]:
        view = x.transpose(2, 3) if transpose else x
        views.append(view.flip(flips) if flips else view)
    return views


def aligned_cams(cams: list[torch.Tensor], mode: str) -> list[torch.Tensor]:
    """Each view's map [N, h, w] mapped back onto the original image: undo the flips, then the transpose."""
    out = []
    for cam, (t, f) in zip(cams, VIEWS[mode], strict=True):
        cam = cam.flip([d - 1 for d in f]) if f else cam
        out.append(cam.transpose(1, 2) if t else cam)
    return out


class EnsembleWrapper(nn.Module):
    """K members x V views -> (logits, probabilities[, member_probabilities][, cam]); see the module docstring.

    ``with_cam``: each member's map per view (:func:`.cam.logits_and_cam`), aligned back and averaged with
    equal weights (:func:`.cam.mean_cam`), the weights that average the logits."""

    def __init__(self, members: list[nn.Module], temperature: float, positive_index: int, tta: str = "none",
                 member_output: bool = True, n_classes: int = 2, with_cam: bool = False,
                 group: Sequence[int] = ()) -> None:
        super().__init__()
        self.members = nn.ModuleList(m.eval().cpu().to(memory_format=torch.contiguous_format) for m in members)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.tta, self.views = tta, TTA_MODES[tta]
        self.positive_index, self.member_output, self.n_classes = positive_index, member_output, n_classes
        self.group = tuple(int(i) for i in group) or (positive_index,)  # the malignancy group, class order
        if with_cam and not all(has_cam_head(m) for m in self.members):
            raise ExportError("the cam output needs ResNet members with a global-average-pool + linear head")
        self.with_cam = with_cam
        self.eval()

    def member_outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[N, K, C]: each member's logits averaged over the TTA views; and the mean aligned map (or None)."""
        views = tta_views(x, self.tta)
        batch = torch.cat(views, 0) if len(views) > 1 else x
        per_member, cams = [], []
        for member in self.members:
            if self.with_cam:
                z, cam = logits_and_cam(member, batch, self.positive_index)
                cams.append(mean_cam(aligned_cams(list(cam.reshape(self.views, -1, *cam.shape[1:])), self.tta)))
            else:
                z = member(batch)
            if self.views > 1:
                z = z.reshape(self.views, -1, self.n_classes).mean(0)
            per_member.append(z)
        return torch.stack(per_member, 1), mean_cam(cams) if cams else None

    def forward(self, x: torch.Tensor):
        z, cam = self.member_outputs(x)
        logits = z.mean(1)
        out = [logits, torch.softmax(logits / self.temperature, dim=1)]
        if self.member_output:
            out.append(group_probability(torch.softmax(z / self.temperature, dim=2), self.group))
        return tuple(out + ([cam] if cam is not None else []))


def group_probability(probs: torch.Tensor, group: Sequence[int]) -> torch.Tensor:
    """[N, M, C] -> [N, M]: the group's probabilities added one by one in class order (as the graph's
    p_malignant); a group of one is that class's column (the two-class graph as before)."""
    total = probs[:, :, group[0]]
    for i in group[1:]:
        total = total + probs[:, :, i]
    return total


@torch.no_grad()
def reference_outputs(wrapper: EnsembleWrapper, batch: np.ndarray) -> dict[str, np.ndarray]:
    """What the graph must output, computed by PyTorch member by member and view by view (fp32 models,
    float64 combination)."""
    wrapper.eval()  # torch.onnx.export restores the mode it found, which a caller may have left in training
    views, pos = tta_views(torch.from_numpy(batch), wrapper.tta), wrapper.positive_index
    zs, cams = [], []
    for m in wrapper.members:
        outs = [logits_and_cam(m, v, pos) if wrapper.with_cam else (m(v), None) for v in views]
        zs.append(torch.stack([z.double() for z, _ in outs]).mean(0))
        if wrapper.with_cam:
            cams.append(mean_cam(aligned_cams([c.double() for _, c in outs], wrapper.tta)))
    z, t = torch.stack(zs, 1), float(wrapper.temperature)
    logits = z.mean(1)
    out = {"logits": logits.numpy(), "probabilities": torch.softmax(logits / t, 1).numpy()}
    if wrapper.member_output:
        out[MEMBER_OUTPUT] = group_probability(torch.softmax(z / t, 2), wrapper.group).numpy()
    if cams:
        out[CAM_OUTPUT] = mean_cam(cams).numpy()
    return out


def check_ensemble_parity(wrapper: EnsembleWrapper, onnx_path: str | os.PathLike[str], batch: np.ndarray, *,
                          atol: float = DEFAULT_ATOL, provider: str = "cpu", batch_sizes: tuple[int, ...] = (1, 7),
                          member_names: list[str] | None = None) -> Comparison:
    """Every output, and every member's column, against PyTorch at batch sizes 1 and 7; raises above ``atol``."""
    names = member_names or [f"member {i}" for i in range(len(wrapper.members))]
    reference = reference_outputs(wrapper, batch)
    if hasattr(wrapper, "ood"):  # the ood_score output (export/ood.py), computed by PyTorch through the same hooks
        reference[OOD_OUTPUT] = reference_ood_scores(wrapper, batch)
    return compare_with_reference(onnx_path, batch, reference, atol=atol, provider=provider,
                                  batch_sizes=batch_sizes, columns={MEMBER_OUTPUT: names})


# --------------------------------------------------------------------------- export


def _ensemble_contract(run, states: list[dict[str, Any]], opset: int, tta: str) -> ModelContract:
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
    bias = base.class_bias
    if len(base.classes) > 2:  # the diagnosis: the offsets tuned on the pooled out-of-fold predictions (or zero)
        tuned = oof.get("class_bias") or {}
        bias = tuple(float(b) for b in tuned.get("offsets") or [0.0] * len(base.classes))
        if len(bias) != len(base.classes):
            raise ExportError(f"run '{run.run_dir.name}': cv.json's class bias has {len(bias)} offsets for "
                              f"{len(base.classes)} classes")
        multiclass = (oof.get("multiclass") or {}).get("metrics") or {}
        ensemble["class_bias_from"] = "out-of-fold" if tuned.get("tuned_on") == "oof" else "none (argmax)"
        ensemble["oof"].update({f"diagnosis_{k}": multiclass[k] for k in ("balanced_accuracy", "macro_auc")
                                if k in multiclass})
        extra["ensemble"] = json.dumps(ensemble)
    return replace(base, threshold=float(oof["threshold"]), threshold_policy=str(oof["threshold_policy"]),
                   temperature=float(oof["temperature"]), class_bias=bias, extra=extra,
                   output_names=(*OUTPUT_NAMES, MEMBER_OUTPUT))


def tta_metadata(tta: str) -> str:
    return json.dumps({"mode": tta, "views": TTA_MODES[tta], "combination": "mean_logits",
                       "transforms": {"flip": ["identity", "flip_width"], "d4": [
                           "identity", "flip_width", "flip_height", "rotate_180", "transpose", "transpose_flip_width",
                           "transpose_flip_height", "transpose_rotate_180"]}.get(tta, ["identity"])})


def export_cv_run(run_dir: str | os.PathLike[str], output: str | os.PathLike[str], *, tta: str = "none",
                  opset: int = 17, data: str | None = None, atol: float = DEFAULT_ATOL, parity_images: int = 32,
                  provider: str = "cpu", embed_preprocessing: bool = False, cam: bool = True, ood: bool = True,
                  ood_accept: float = DEFAULT_OOD_ACCEPT, echo=print) -> ExportResult:
    """A complete CV run -> one ONNX file with all K members (checked, parity-tested, atomic); with ``ood``
    each member's Gaussians are fitted on its own training folds (:func:`skinonnx.export.ood.fit_members`)."""
    from ..training.cv_export import load_complete_run

    t0, output = time.perf_counter(), onnx_output(output)
    run = load_complete_run(run_dir)
    states = [load_checkpoint(p) for p in run.best_paths]
    contract = _ensemble_contract(run, states, opset, tta)
    echo(f"ensemble of {len(states)} folds of run '{run.run_dir.name}' (mean logits, OOF temperature "
         f"{contract.temperature:.3f}, threshold {contract.threshold:.4f}){f', TTA {tta}' if tta != 'none' else ''}")

    def fit_ood(members: list[nn.Module]) -> OodFit:
        prep = Preprocessing.from_dict(states[0]["preprocessing"])
        return fit_members(members, _oof_rows(run, contract.classes), prep,
                           lambda m: EnsembleWrapper([m], 1.0, contract.positive_index, tta, member_output=False,
                                                     n_classes=len(contract.classes)),
                           accept=ood_accept, tta=tta, views=TTA_MODES[tta])

    return _write([model_from_checkpoint(s) for s in states], contract, ExportResult(output, contract, tta=tta),
                  [f"fold-{st['fold']}" for st in run.folds], dict(
                      state=states[0], data=data or run.cv.get("data_root"), opset=opset, parity_images=parity_images,
                      provider=provider, embed_preprocessing=embed_preprocessing, echo=echo, t0=t0), atol, cam,
                  fit_ood if ood else None)


def export_single_tta(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], *, tta: str,
                      opset: int = 17, data: str | None = None, atol: float = DEFAULT_ATOL, parity_images: int = 32,
                      provider: str = "cpu", embed_preprocessing: bool = False, cam: bool = True, ood: bool = True,
                      ood_accept: float = DEFAULT_OOD_ACCEPT, echo=print) -> ExportResult:
    """One checkpoint with TTA views in the graph (outputs as a plain export: logits, probabilities[, cam]
    [, ood_score]: the OOD score is the mean over the views, its threshold fitted on that same mean)."""
    t0, checkpoint, output = time.perf_counter(), Path(checkpoint), onnx_output(output)
    state = load_checkpoint(checkpoint)
    contract = contract_from_checkpoint(state, checkpoint, opset)
    contract = replace(contract, extra={**contract.extra, "tta": tta_metadata(tta)})

    def fit_ood(members: list[nn.Module]) -> OodFit:
        base = EnsembleWrapper(members, 1.0, contract.positive_index, tta, member_output=False,
                               n_classes=len(contract.classes))
        return fit_for_checkpoint(members[0], state, data, accept=ood_accept, tta=tta, views=TTA_MODES[tta],
                                  base=base)

    return _write([model_from_checkpoint(state)], contract, ExportResult(output, contract, tta=tta), ["model"], dict(
        state=state, data=data, opset=opset, parity_images=parity_images, provider=provider,
        embed_preprocessing=embed_preprocessing, echo=echo, t0=t0), atol, cam, fit_ood if ood else None)


def _write(members: list[nn.Module], contract: ModelContract, result: ExportResult, names: list[str],
           options: dict[str, Any], atol: float, cam: bool,
           fit_ood: Callable[[list[nn.Module]], OodFit] | None = None) -> ExportResult:
    """The members' wrapper (with the map when asked and every member has the head, and ``fit_ood``'s
    ``ood_score`` last) through the shared writer."""
    with_cam = cam and all(has_cam_head(m) for m in members)
    if with_cam:
        result.contract = contract = replace(contract, output_names=(*contract.output_names, CAM_OUTPUT))
    wrapper = EnsembleWrapper(members, contract.temperature, contract.positive_index, result.tta,
                              member_output=MEMBER_OUTPUT in contract.output_names, with_cam=with_cam,
                              n_classes=len(contract.classes), group=contract.group)
    result.members = len(members)
    if fit_ood is not None:
        fit = fit_ood(list(wrapper.members))
        options["echo"](fit.text())
        result.contract = fit.contract(contract)
        fit.attach(wrapper, list(wrapper.members))
    return write_checked(result, wrapper, lambda tmp, batch: check_ensemble_parity(
        wrapper, tmp, batch, atol=atol, provider=options["provider"], member_names=names), **options)


def _oof_rows(run, classes: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """(path, class index, fold) of every pooled image of a CV run: each member's training split is the others'."""
    from ..training.cv_oof import read_oof

    root = Path(run.cv["data_root"])
    root = root.parent if root.is_file() else root
    rows = [r for st in run.folds for r in read_oof(run.run_dir, int(st["fold"]), list(classes))]
    return [(str(p if (p := Path(r["path"])).is_absolute() else root / p), classes.index(r["label"]), r["fold"])
            for r in rows]


def _own_checkpoint(meta: dict[str, str]) -> tuple[Path | None, str | None]:
    """The checkpoint a single-model file was exported from, when its run folder still holds it unchanged."""
    from ..hashing import file_sha256

    run = meta.get("training_run_dir")
    candidate = Path(run) / "weights" / meta.get("source_checkpoint", "best.pt") if run else None
    if candidate is None or not candidate.is_file() or file_sha256(candidate) != meta.get("source_checkpoint_sha256"):
        return None, None
    return candidate, f"checkpoint: {candidate} (the one this file was exported from)"


def is_ensemble_or_tta(onnx_path: str | os.PathLike[str]) -> bool:
    from ..deploy.info import read_header

    meta = read_header(onnx_path).metadata
    return "ensemble" in meta or "tta" in meta


def recheck_parity(source: str | None, onnx_path: str | os.PathLike[str], data: str | None, *,
                   runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR, atol: float = DEFAULT_ATOL,
                   n_images: int = 32, provider: str = "cpu", echo=print) -> tuple[Comparison, str]:
    """`parity` for any skinonnx file: rebuild the same members, views, temperature and outputs in PyTorch.

    ``source``: for an ensemble its CV run (folder or name under ``runs_dir``; default: the run its metadata
    names), else the checkpoint (file or run; default: the newest run's under ``runs_dir``).
    """
    from ..deploy.info import read_header
    from ..training.cv_export import load_complete_run
    from ..training.runs import resolve_checkpoint, resolve_run

    meta = read_header(onnx_path).metadata
    tta = json.loads(meta["tta"])["mode"] if "tta" in meta else "none"
    if "ensemble" in meta:
        run = load_complete_run(resolve_run(source, runs_dir) if source else Path(meta.get("training_run_dir", "")))
        states = [load_checkpoint(p) for p in run.best_paths]
        names, data = [f"fold-{st['fold']}" for st in run.folds], data or run.cv.get("data_root")
    else:
        checkpoint, note = _own_checkpoint(meta) if source is None else (None, None)
        if checkpoint is None:
            checkpoint, note = resolve_checkpoint(source, runs_dir)
        if note:
            echo(note)
        states, names = [load_checkpoint(checkpoint)], ["model"]
    contract = ModelContract.from_metadata(meta, source=str(onnx_path))
    wrapper = EnsembleWrapper([model_from_checkpoint(s) for s in states], contract.temperature,
                              contract.positive_index, tta, member_output="ensemble" in meta,
                              with_cam=CAM_OUTPUT in contract.output_names, n_classes=len(contract.classes),
                              group=contract.group)
    batch, _, where = parity_batch(states[0], data, n_images)
    echo(f"parity images: {where}")
    return check_ensemble_parity(wrapper, onnx_path, batch, atol=atol, provider=provider, member_names=names), where
