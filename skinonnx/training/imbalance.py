"""Class imbalance: loss weights (``--class-weights auto``) and a class-balanced sampler (``--sampler balanced``).

Real ISIC data is about 20 % malignant, HAM10000 two thirds nevi; without either, a model can reach a low loss by
favouring the common class. Both work for any number of classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler


def auto_class_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """scikit-learn's "balanced" weights, n / (k * n_c): every class contributes equally to the mean loss."""
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes).double()
    if (counts == 0).any():
        return [1.0] * num_classes  # the loaders refuse a split that lacks a class; never divide by zero here
    return (counts.sum() / (num_classes * counts)).tolist()


def balanced_sampler(labels: Sequence[int], seed: int) -> WeightedRandomSampler:
    """Draw len(labels) samples per epoch, with replacement, each class with equal probability (seeded)."""
    y = torch.as_tensor(list(labels), dtype=torch.long)
    per_class = torch.bincount(y).double()
    weights = (1.0 / per_class)[y]
    return WeightedRandomSampler(weights, num_samples=len(y), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))
