"""Running a model over a loader and the per-epoch validation metrics (shared by the loop and finalize)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..softmax import softmax
from .device import autocast


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: torch.device, *, amp: bool = False,
             channels_last: bool = False, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return (logits (N, C) float64, labels (N,)) in loader order."""
    model.eval()
    all_logits, all_labels = [], []
    for images, targets in tqdm(loader, desc="eval", unit="batch", disable=not progress, leave=False):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(images)
        all_logits.append(logits.float().cpu().numpy())
        all_labels.append(targets.numpy())
    return np.concatenate(all_logits).astype(np.float64), np.concatenate(all_labels)


def validation_metrics(logits: np.ndarray, labels: np.ndarray, positive_index: int | Sequence[int]
                       ) -> dict[str, float]:
    """Loss, accuracy and AUC of one epoch. Two classes: the AUC of the positive class (``positive_index``).
    More: ``val_auc`` is the macro one-vs-rest AUC (what ``--select auc`` picks by), beside the balanced accuracy
    and the AUC of the malignancy group ``positive_index`` (class indices)."""
    from sklearn.metrics import roc_auc_score

    from ..evaluation.multiclass_metrics import malignant_probability, malignant_truth, multiclass_metrics

    probs = softmax(logits)
    loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))
    group = [positive_index] if isinstance(positive_index, (int, np.integer)) else list(positive_index)
    y = malignant_truth(labels, group)
    score = malignant_probability(probs, group)
    auc = float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else math.nan
    row = {"val_loss": loss, "val_acc": float(np.mean(probs.argmax(1) == labels)), "val_auc": auc}
    if probs.shape[1] > 2:
        k = multiclass_metrics(labels, probs, probs.argmax(1), [str(c) for c in range(probs.shape[1])])
        row = {**row, "val_auc": k["macro_auc"], "val_balanced_accuracy": k["balanced_accuracy"],
               "val_malignant_auc": auc}
    return row
