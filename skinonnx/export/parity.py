"""PyTorch vs ONNX Runtime parity on real images: the PyTorch side of :mod:`.checks`'s report."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..deploy.contract import CAM_OUTPUT
from ..deploy.info import read_header
from ..deploy.runtime import create_session
from .cam import logits_and_cam
from .checks import Comparison, load_parity_images, rule_of, run_outputs

__all__ = ["DEFAULT_ATOL", "check_parity", "compare_with_reference", "load_parity_images", "torch_outputs"]
DEFAULT_ATOL = 1e-4


@torch.no_grad()
def torch_outputs(model: nn.Module, batch: np.ndarray, temperature: float = 1.0,
                  positive_index: int | None = None) -> dict[str, np.ndarray]:
    """PyTorch's ``logits`` and ``probabilities`` (and with ``positive_index`` the ``cam`` map) for ``batch``."""
    model = model.eval().to("cpu", memory_format=torch.contiguous_format)
    x = torch.from_numpy(batch)
    cam = None
    if positive_index is None:
        logits = model(x).double()
    else:
        logits, cam = logits_and_cam(model, x, positive_index)
        logits = logits.double()
    probs = torch.softmax(logits / temperature, dim=1)
    out = {"logits": logits.numpy(), "probabilities": probs.numpy()}
    if cam is not None:
        out[CAM_OUTPUT] = cam.double().numpy()
    return out


def check_parity(model: nn.Module, onnx_path: str | os.PathLike[str], batch: np.ndarray, *,
                 temperature: float = 1.0, atol: float = DEFAULT_ATOL, provider: str = "cpu",
                 batch_sizes: Sequence[int] = (1, 7), extra_reference: dict[str, np.ndarray] | None = None
                 ) -> Comparison:
    """Compare every ONNX output with PyTorch at several batch sizes on the same pixels.

    ``extra_reference``: more outputs computed by PyTorch (name -> expected), e.g. ``ood_score``.

    Raises :class:`ShapeError` / :class:`AtolError` (after building the whole report) when
    anything is off; ``batch_sizes`` deliberately include 1 and an odd size.
    """
    reference = {**torch_outputs(model, batch, temperature, _cam_positive_index(onnx_path)), **(extra_reference or {})}
    return compare_with_reference(onnx_path, batch, reference, atol=atol, provider=provider,
                                  batch_sizes=batch_sizes)


def _cam_positive_index(onnx_path: str | os.PathLike[str]) -> int | None:
    """The class whose map a file's ``cam`` output holds (checked too), or None when the file has no map.

    Read from the metadata header, which lists every output of our exports (``output_names``), instead of
    building a second ONNX Runtime session beside the one that runs the check."""
    meta = read_header(onnx_path).metadata
    if CAM_OUTPUT not in json.loads(meta.get("output_names", "[]")):
        return None
    return int(meta.get("positive_index", "1"))


def compare_with_reference(onnx_path: str | os.PathLike[str], batch: np.ndarray, reference: dict[str, np.ndarray],
                           *, atol: float = DEFAULT_ATOL, provider: str = "cpu", batch_sizes: Sequence[int] = (1, 7),
                           columns: dict[str, Sequence[str]] | None = None) -> Comparison:
    """ONNX Runtime's outputs vs ``reference`` (name -> expected array) at each batch size; raises after the
    whole report is built. ``columns``: outputs checked column by column (an ensemble's members)."""
    session, used = create_session(Path(onnx_path), provider)
    report = Comparison(f"parity on {len(batch)} real images (ONNX Runtime {used} vs PyTorch fp32 CPU)", len(batch),
                        used)
    rule = rule_of(onnx_path)  # the graph's label/in_distribution vs the same rule on PyTorch's outputs
    for size in sorted({min(b, len(batch)) for b in batch_sizes}):
        got = run_outputs(session, batch, size)
        report.add(reference, got, dict.fromkeys(reference, atol), batch_size=size, columns=columns)
        if got.get("probabilities") is not None and got["probabilities"].shape == reference["probabilities"].shape:
            report.add_decisions(reference, got, rule, dict.fromkeys(reference, atol))
    return report.require("parity")
