"""After training: calibrate (temperature scaling) and choose the operating point on validation.

Both go into best.pt, so export writes them into the ONNX graph/metadata and every
runtime gets calibrated probabilities and the chosen threshold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation.calibration import brier_score, expected_calibration_error, fit_temperature, softmax
from ..evaluation.thresholds import choose_threshold, parse_policy
from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .validate import evaluate


def calibrate_and_choose(logits: np.ndarray, labels: np.ndarray, positive_index: int, policy_text: str,
                         calibrate: bool = True) -> dict[str, Any]:
    """Pure step: fit T on validation logits, pick the threshold on calibrated probabilities."""
    y = (labels == positive_index).astype(int)
    raw = softmax(logits)[:, positive_index]
    temperature = float(fit_temperature(logits, labels)) if calibrate and 0 < y.sum() < len(y) else 1.0
    calibrated = softmax(logits, temperature)[:, positive_index]
    policy = parse_policy(policy_text)
    choice = choose_threshold(policy, y, calibrated)
    threshold = float(choice.value)
    note = choice.note
    return {
        "decision": {"policy": str(policy), "threshold": threshold, "note": note or "",
                     "roc_point": choice.roc_point},
        "calibration": {
            "temperature": temperature,
            "ece_before": float(expected_calibration_error(y, raw)),
            "ece_after": float(expected_calibration_error(y, calibrated)),
            "brier_before": float(brier_score(y, raw)),
            "brier_after": float(brier_score(y, calibrated)),
        },
        "val_predictions": {"logits": torch.from_numpy(logits.astype(np.float32)),
                            "labels": torch.from_numpy(labels.astype(np.int64))},
    }


def finalize_best(best_path: Path, val_loader, device: torch.device, cfg, echo=print) -> dict[str, Any]:
    state = load_checkpoint(best_path)
    model = model_from_checkpoint(state).to(device)
    logits, labels = evaluate(model, val_loader, device)
    extra = calibrate_and_choose(logits, labels, int(state["positive_index"]), cfg.threshold_policy, cfg.calibrate)
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "format_version")} | extra, best_path)
    cal, dec = extra["calibration"], extra["decision"]
    echo(f"best epoch {state['epoch']}: temperature {cal['temperature']:.3f} (val ECE {cal['ece_before']:.3f} -> "
         f"{cal['ece_after']:.3f}), threshold {dec['threshold']:.4f} by policy {dec['policy']}"
         + (f" ({dec['note']})" if dec["note"] else ""))
    return extra
