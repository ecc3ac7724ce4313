"""After training: calibrate (temperature scaling) and choose the operating point on validation.

Both go into best.pt, so export writes them into the ONNX graph/metadata and every
runtime gets calibrated probabilities and the chosen threshold. The threshold is on the malignancy score
p_malignant: the summed calibrated probability of the malignancy group (for two classes, the positive class's
probability, as always). With ``--class-bias val`` the per-class offsets of the diagnosis decision
(evaluation/class_bias.py) are tuned on the calibrated validation log-probabilities too; ``class_bias`` holds them
(zeros otherwise).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..evaluation.calibration import (
    TEMPERATURE_BOUNDS,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    negative_log_likelihood,
)
from ..evaluation.class_bias import log_probabilities, tune_class_bias
from ..evaluation.multiclass_metrics import malignant_probability, malignant_truth
from ..evaluation.thresholds import choose_threshold, parse_policy
from ..softmax import softmax
from .checkpoint import load_checkpoint, malignant_group, model_from_checkpoint, save_checkpoint
from .validate import evaluate


def _group(positive_index: int | Sequence[int]) -> list[int]:
    """The malignancy group from a positive class index (two classes) or a list of class indices."""
    return [int(positive_index)] if isinstance(positive_index, (int, np.integer)) else [int(i) for i in positive_index]


def guard_temperature(logits: np.ndarray, labels: np.ndarray, positive_index: int | Sequence[int], fitted: float
                      ) -> tuple[float, str]:
    """Keep a fitted temperature only if it is off its bounds and makes validation NLL and ECE no worse.

    On a tiny or separable split T runs to its lower bound; on a model without signal to its upper bound; then T = 1
    is kept and the reason returned (empty when the fit is kept). Single runs and CV (on OOF logits) both use it.
    """
    lo, hi = TEMPERATURE_BOUNDS
    group = _group(positive_index)
    y = malignant_truth(labels, group)
    nll = (negative_log_likelihood(logits, labels, 1.0), negative_log_likelihood(logits, labels, fitted))
    ece = (expected_calibration_error(y, malignant_probability(softmax(logits), group)),
           expected_calibration_error(y, malignant_probability(softmax(logits, fitted), group)))
    # The bounded search stops short of a bound it is drawn to (0.06 for a bound of 0.05), so compare the NLL
    # there: if a bound is as good as the fit, the optimum lies on it (or beyond).
    if negative_log_likelihood(logits, labels, hi) <= nll[1] + 1e-6:  # flattening every probability helps most
        return 1.0, (f"ran to its upper bound ({hi}): the model shows no signal on these {len(y)} images (its "
                     "scores do not separate the classes), so there is nothing to calibrate")
    if negative_log_likelihood(logits, labels, lo) <= nll[1] + 1e-6:
        return 1.0, (f"hit its lower bound ({lo}): the split ({len(y)} images) is too small or too easily "
                     "separated to calibrate on")
    if nll[1] > nll[0] + 1e-9 or ece[1] > ece[0] + 1e-9:
        return 1.0, (f"made validation worse (NLL {nll[0]:.3f} -> {nll[1]:.3f}, ECE {ece[0]:.3f} -> {ece[1]:.3f})")
    return fitted, ""


def calibrate_and_choose(logits: np.ndarray, labels: np.ndarray, positive_index: int | Sequence[int],
                         policy_text: str, calibrate: bool = True, class_bias: str = "none") -> dict[str, Any]:
    """Pure step: fit T on validation logits (refused when it would not help), pick the threshold on the
    calibrated malignancy score; ``class_bias`` other than "none": tune the per-class offsets on the calibrated
    log-probabilities (the name says where they were tuned: "val" or "oof").

    ``positive_index``: the positive class (two classes) or the malignancy group's class indices."""
    group = _group(positive_index)
    y = malignant_truth(labels, group)
    raw = malignant_probability(softmax(logits), group)
    fitted = float(fit_temperature(logits, labels)) if calibrate and 0 < y.sum() < len(y) else None
    temperature, refused = (1.0, "") if fitted is None else guard_temperature(logits, labels, group, fitted)
    calibrated = malignant_probability(softmax(logits, temperature), group)
    policy = parse_policy(policy_text)
    choice = choose_threshold(policy, y, calibrated)
    threshold = float(choice.value)
    note = choice.note
    n_classes = logits.shape[1]
    bias = {"tuned_on": "none", "offsets": [0.0] * n_classes}
    if class_bias != "none":
        tuned = tune_class_bias(log_probabilities(logits, temperature), labels)
        bias = {"tuned_on": class_bias, "on": "log_probabilities", **tuned.as_dict()}
    return {
        "malignant": group,
        "class_bias": bias,
        "decision": {"policy": str(policy), "threshold": threshold, "note": note or "",
                     "roc_point": choice.roc_point},
        "calibration": {
            "temperature": temperature,
            "fitted_temperature": fitted,
            "refused": refused,
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
    extra = calibrate_and_choose(logits, labels, malignant_group(state), cfg.threshold_policy, cfg.calibrate,
                                 "val" if cfg.class_bias == "val" else "none")
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "format_version")} | extra, best_path)
    cal, dec = extra["calibration"], extra["decision"]
    if cal["refused"]:
        echo(f"calibration refused: the fitted temperature {cal['fitted_temperature']:.3f} {cal['refused']}; "
             "keeping T = 1 (uncalibrated)")
    what = "threshold" if len(state["classes"]) == 2 else "malignancy threshold"
    echo(f"best epoch {state['epoch']}: temperature {cal['temperature']:.3f} (val ECE {cal['ece_before']:.3f} -> "
         f"{cal['ece_after']:.3f}), {what} {dec['threshold']:.4f} by policy {dec['policy']}"
         + (f" ({dec['note']})" if dec["note"] else ""))
    bias = extra["class_bias"]
    if bias["tuned_on"] != "none":
        echo(f"class bias (tuned on validation): offsets "
             f"{', '.join(f'{c} {b:+.3f}' for c, b in zip(state['classes'], bias['offsets'], strict=True))}; "
             f"val balanced accuracy {bias['balanced_accuracy_before']:.3f} -> {bias['balanced_accuracy_after']:.3f}")
    return extra
