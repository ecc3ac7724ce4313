"""PyTorch vs ONNX Runtime parity on real images: a per-output ✓/✗ report that fails loudly."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.images import DEFAULT_MAX_PIXELS
from ..data.preprocessing import Preprocessing
from ..deploy.contract import CAM_OUTPUT
from ..deploy.info import read_header
from ..deploy.runtime import create_session
from ..errors import AtolError, ShapeError, SkinOnnxError
from .cam import logits_and_cam

DEFAULT_ATOL = 1e-4


@dataclass
class OutputCheck:
    output: str
    batch_size: int
    max_abs_diff: float
    atol: float
    shape_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.shape_ok and self.max_abs_diff <= self.atol

    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        if not self.shape_ok:
            return f"  {mark} {self.output:<13} batch {self.batch_size:>2}: shape mismatch"
        return (f"  {mark} {self.output:<13} batch {self.batch_size:>2}: "
                f"max |Δ| = {self.max_abs_diff:.2e} (atol {self.atol:.0e})")


@dataclass
class ParityReport:
    n_images: int
    provider: str
    checks: list[OutputCheck] = field(default_factory=list)
    label_agreement: float = 1.0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks) and self.label_agreement == 1.0

    @property
    def max_prob_diff(self) -> float:
        return max((c.max_abs_diff for c in self.checks if c.output == "probabilities"), default=float("nan"))

    def text(self) -> str:
        head = f"parity on {self.n_images} real images (ONNX Runtime {self.provider} vs PyTorch fp32 CPU):"
        lines = [head, *(c.line() for c in self.checks)]
        mark = "✓" if self.label_agreement == 1.0 else "✗"
        lines.append(f"  {mark} labels agree on {self.label_agreement:.1%} of images")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "n_images": self.n_images, "provider": self.provider,
                "label_agreement": self.label_agreement, "max_abs_diff_probabilities": self.max_prob_diff,
                "checks": [{"output": c.output, "batch_size": c.batch_size, "max_abs_diff": c.max_abs_diff,
                            "atol": c.atol, "ok": c.ok} for c in self.checks]}


def load_parity_images(paths: Sequence[str | os.PathLike[str]], prep: Preprocessing, limit: int, *,
                       max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Preprocess up to ``limit`` readable images with the shared definition; (N, 3, S, S) float32."""
    from ..errors import ImageError

    arrays = []
    for path in paths:
        if len(arrays) >= limit:
            break
        try:
            arrays.append(prep.from_file(path, max_pixels=max_pixels))
        except ImageError:
            continue
    if not arrays:
        raise SkinOnnxError("parity check needs real images, and none of the given ones could be read")
    return np.stack(arrays)


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
                 ) -> ParityReport:
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
                           columns: dict[str, Sequence[str]] | None = None) -> ParityReport:
    """ONNX Runtime's outputs vs ``reference`` (name -> expected array) at each batch size.

    ``columns``: outputs checked column by column, each column under its own name (an ensemble's
    ``member_probabilities``: one check per member). Raises after building the whole report.
    """
    session, used = create_session(Path(onnx_path), provider)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in session.get_outputs()]
    columns = columns or {}
    report = ParityReport(n_images=len(batch), provider=used)
    onnx_labels = None
    for size in sorted({min(b, len(batch)) for b in batch_sizes}):
        chunks = [session.run(output_names, {input_name: batch[i:i + size]}) for i in range(0, len(batch), size)]
        outputs = {name: np.concatenate([c[k] for c in chunks]) for k, name in enumerate(output_names)}
        for name, expected in reference.items():
            got = outputs.get(name)
            if got is None or got.shape != expected.shape:
                report.checks.append(OutputCheck(name, size, float("inf"), atol, shape_ok=False))
            elif name in columns:
                report.checks += [OutputCheck(label, size, float(np.max(np.abs(got[:, i] - expected[:, i]))), atol)
                                  for i, label in enumerate(columns[name])]
            else:
                report.checks.append(OutputCheck(name, size, float(np.max(np.abs(got - expected))), atol))
        if "probabilities" in outputs:
            onnx_labels = outputs["probabilities"].argmax(1)
    if onnx_labels is not None:
        report.label_agreement = float(np.mean(onnx_labels == reference["probabilities"].argmax(1)))
    if any(not c.shape_ok for c in report.checks):
        raise ShapeError(report.text() + "\nparity FAILED: output shapes differ")
    if not report.ok:
        bad = sorted({c.output for c in report.checks if not c.ok})
        raise AtolError(report.text() + f"\nparity FAILED: {', '.join(bad) or 'labels'} differ by more than "
                        f"the tolerance {atol:g}")
    return report
