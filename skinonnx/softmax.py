"""The one softmax (numpy, torch-free): calibration, the runtime, explain and reports all call this."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def softmax(logits: ArrayLike, temperature: float = 1.0) -> NDArray[np.float64]:
    """Softmax of ``logits / temperature`` over the last axis (numerically stable, float64)."""
    if not temperature > 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))
