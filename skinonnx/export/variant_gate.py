"""Gate for converted copies of an fp32 model (fp16, ORT format): same labels, probabilities within a tolerance."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.layouts import discover
from ..deploy.runtime import OnnxClassifier
from ..errors import DataError, ExportError


@dataclass
class VariantGate:
    """A converted copy (fp16, ORT format) against its source file on the same real images; ``name`` says which."""

    name: str
    n_images: int
    label_agreement: float
    max_prob_diff: float
    max_logit_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.label_agreement == 1.0 and self.max_prob_diff <= self.tolerance

    def text(self) -> str:
        mark = "✓" if self.ok else "✗"
        return (f"{self.name} on {self.n_images} real images:\n"
                f"  {mark} labels agree on {self.label_agreement:.1%} (need 100 %); probabilities max |Δ| = "
                f"{self.max_prob_diff:.2e} (tolerance {self.tolerance:g}); logits max |Δ| = {self.max_logit_diff:.2e}")


def gate_images(data: str | os.PathLike[str], limit: int) -> list[Path]:
    """The first ``limit`` images of the validation split (else the first split), both classes interleaved."""
    found = discover(data, write_split_file=False)
    split = "val" if found.splits.get("val") else next(iter(found.splits))
    by_class: dict[int, list[Path]] = {}
    for sample in found.splits[split]:
        by_class.setdefault(sample.label, []).append(Path(sample.path))
    mixed = [p for pair in zip(*by_class.values(), strict=False) for p in pair]
    taken = set(mixed)
    rest = [p for paths in by_class.values() for p in paths if p not in taken]
    return (mixed + rest)[:limit]


def compare(fp32: OnnxClassifier, other: OnnxClassifier, paths: list[Path], tolerance: float, name: str) -> VariantGate:
    """Both models on the same files: label agreement at the model's threshold, max |Δ| of probabilities and logits."""
    pos, threshold = fp32.contract.positive_index, fp32.contract.threshold
    a = [p for p in fp32.predict_files(paths, batch_size=8, with_logits=True) if p.ok]
    b = {p.path: p for p in other.predict_files(paths, batch_size=8, with_logits=True) if p.ok}
    if not a:
        raise DataError("the gate needs real images, and none of the given ones could be read")
    p32 = np.stack([p.probabilities for p in a])
    p16 = np.stack([b[p.path].probabilities for p in a])
    z32 = np.stack([p.logits for p in a])
    z16 = np.stack([b[p.path].logits for p in a])
    agree = float(np.mean((p32[:, pos] >= threshold) == (p16[:, pos] >= threshold)))
    return VariantGate(name, len(a), agree, float(np.abs(p32 - p16).max()), float(np.abs(z32 - z16).max()), tolerance)


def check_variant_graph(model, what: str) -> None:  # onnx.ModelProto
    """``onnx.checker`` (full) on a derived graph (fp16, uint8 input): a failure names the variant."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{what} graph failed the ONNX checker: {exc}") from None
