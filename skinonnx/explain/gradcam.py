"""Grad-CAM (Selvaraju et al., 2017) on the last convolutional block of the ResNet50.

For a target class c the score is its log-odds against the other classes,
``z_c - logsumexp(z_others)`` (for two classes ``z_c - z_other``): the quantity the
softmax, and so the calibrated probability, depends on. The map is
``ReLU(sum_k alpha_k A_k)`` with ``A`` the activations of ``model.layer4`` and ``alpha_k``
the spatial mean of d score / d A_k. Its resolution is the layer's: image_size / 32 cells
per side (7 x 7 at 224 px, 2 x 2 at 64 px); the peak is reported as the centre of the
strongest cell, never finer than that.

The target is one class for the whole batch, or a function of the batch's logits giving one class per image
(``explain``'s default for more than two classes: each image's decided class).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import SkinOnnxError


@dataclass
class CamBatch:
    cams: np.ndarray  # (N, h, w) float32 >= 0, unnormalised
    logits: np.ndarray  # (N, C) float64
    targets: np.ndarray | None = None  # (N,) the class each map is of

    def normalized(self) -> np.ndarray:
        """Each map divided by its maximum (all-zero maps stay zero: no evidence for the class)."""
        peak = self.cams.reshape(len(self.cams), -1).max(1)
        return self.cams / np.where(peak > 0, peak, 1.0)[:, None, None]

    def peaks(self, image_size: int) -> np.ndarray:
        """(N, 2) x, y of the strongest cell's centre in cropped-image pixel coordinates."""
        n, h, w = self.cams.shape
        flat = self.cams.reshape(n, -1).argmax(1)
        rows, cols = np.divmod(flat, w)
        return np.stack([(cols + 0.5) * image_size / w, (rows + 0.5) * image_size / h], axis=1)


class GradCam:
    """``GradCam(model)(batch, target)``: ``target`` a class index, or ``logits (N, C) float64 -> N class indices``;
    the model is put in eval mode (batch norm frozen)."""

    def __init__(self, model: nn.Module, layer: nn.Module | None = None) -> None:
        self.model = model.eval()
        self.layer = layer if layer is not None else model.layer4

    def __call__(self, batch: torch.Tensor, target: int | Callable[[np.ndarray], Sequence[int]]) -> CamBatch:
        captured: list[torch.Tensor] = []
        handle = self.layer.register_forward_hook(lambda _m, _i, output: captured.append(output))
        try:
            with torch.enable_grad():
                logits = self.model(batch)
                if not captured:
                    raise SkinOnnxError("Grad-CAM: the target layer did not run")
                activations = captured[-1]
                if isinstance(target, (int, np.integer)):
                    targets = np.full(len(logits), int(target), np.int64)
                    others = torch.cat([logits[:, :target], logits[:, target + 1:]], dim=1)
                    score = logits[:, target] - torch.logsumexp(others, dim=1)
                else:
                    targets = np.asarray(target(logits.detach().double().cpu().numpy()), np.int64).reshape(-1)
                    score = _log_odds(logits, torch.as_tensor(targets, device=logits.device))
                (grads,) = torch.autograd.grad(score.sum(), activations)
        finally:
            handle.remove()
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cams = torch.relu((weights * activations).sum(dim=1))
        return CamBatch(cams.detach().float().cpu().numpy(), logits.detach().double().cpu().numpy(), targets)


def _log_odds(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each row's target logit against the logsumexp of its other logits."""
    chosen = logits.gather(1, targets[:, None]).squeeze(1)
    others = logits.masked_fill(torch.nn.functional.one_hot(targets, logits.shape[1]).bool(), float("-inf"))
    return chosen - torch.logsumexp(others, dim=1)
