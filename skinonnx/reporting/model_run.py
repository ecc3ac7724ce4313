"""Running the model over one split of a labelled data set (ONNX Runtime, no torch), and what `test` keeps of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import DEFAULT_MAX_PIXELS
from ..data.layouts import LabeledData
from ..data.preprocessing import Preprocessing
from ..deploy.cam_overlays import relative_to_threshold
from ..deploy.runtime import OnnxClassifier
from ..errors import SkinOnnxError
from ..softmax import softmax


@dataclass
class SplitPredictions:
    """One split through the model: labels (1 = positive), calibrated and raw positive probabilities.

    More than two classes: "positive" is the malignancy group (``y_prob`` is the graph's ``p_malignant``), and
    ``classes`` holds each image's true class index, ``probabilities`` the (N, K) calibrated probabilities and
    ``decided`` the graph's ``label`` output (the diagnosis the file decides)."""

    split: str
    rows: list[dict[str, Any]]
    y_true: np.ndarray
    y_prob: np.ndarray
    y_prob_raw: np.ndarray | None  # softmax(logits) with T = 1; None when the graph has no logits
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cams: list[np.ndarray] | None = None  # per row: the graph's cam, shifted to the threshold (for display)
    classes: np.ndarray | None = None  # more than two classes: true class indices (contract order)
    probabilities: np.ndarray | None = None  # more than two classes: (N, K) calibrated probabilities
    decided: np.ndarray | None = None  # more than two classes: the graph's label output


def predict_split(classifier: OnnxClassifier, data: LabeledData, split: str, threshold: float, *,
                  batch_size: int = 16, progress: bool = True,
                  max_pixels: int = DEFAULT_MAX_PIXELS, with_cam: bool = False) -> SplitPredictions:
    contract = classifier.contract
    to_model = {i: contract.classes.index(c) for i, c in enumerate(data.classes)}
    samples = data.split(split)
    pos = contract.positive_index
    group = list(contract.group)
    k_class = contract.multiclass
    rows, raw, skipped, cams, truths, probs, decided = [], [], [], [], [], [], []
    with_cam = with_cam and classifier.has_cam and not k_class  # the cam shown is the binary log-odds map
    predictions = classifier.predict_files([s.path for s in samples], batch_size=batch_size, progress=progress,
                                           with_logits=True, max_pixels=max_pixels, with_cam=with_cam,
                                           threshold=threshold)
    for sample, pred in zip(samples, predictions, strict=True):
        if not pred.ok:
            skipped.append((pred.path, str(pred.error)))
            continue
        label = to_model[sample.label]
        predicted = int(pred.label)  # the graph's decision (the rule at an overridden threshold)
        if k_class:  # the malignancy group's probability, as the graph sums it
            prob = float(pred.p_malignant if pred.p_malignant is not None else pred.probabilities[group].sum())
        else:
            prob = float(pred.probabilities[pos])
        row = {"path": pred.path, "label": contract.classes[label], "probability": prob,
               "prediction": contract.classes[predicted], "correct": int(predicted == label)}
        if pred.logits is not None:
            raw.append(float(softmax(pred.logits)[group].sum()) if k_class else float(softmax(pred.logits)[pos]))
            row["probability_uncalibrated"] = raw[-1]
        if k_class:  # every class's probability and the malignancy decision, as `predict` writes them
            row.update({f"p_{name}": float(v) for name, v in zip(contract.classes, pred.probabilities, strict=True)})
            row["malignant"] = int(bool(pred.malignant))
            truths.append(label)
            probs.append(np.asarray(pred.probabilities, dtype=np.float64))
            decided.append(predicted)
        if pred.ood_score is not None:  # the headline metrics stay on all images; summary's "ood" adds the rest
            row["ood_score"], row["in_distribution"] = pred.ood_score, pred.in_distribution
        rows.append(row)
        if pred.cam is not None and pred.logits is not None:  # shown relative to the threshold used
            cams.append(relative_to_threshold(pred.cam, float(pred.logits[pos] - pred.logits[1 - pos]), threshold,
                                              contract.temperature))
    if not rows:
        first = f"; first: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise SkinOnnxError(f"no readable images in the {split} split ({len(skipped)} skipped{first})")
    y_true = np.array([int(contract.classes.index(r["label"]) in group) for r in rows]) if k_class else \
        np.array([int(r["label"] == contract.positive_class) for r in rows])
    y_prob = np.array([r["probability"] for r in rows])
    y_raw = np.array(raw) if len(raw) == len(rows) else None
    out = SplitPredictions(split, rows, y_true, y_prob, y_raw, skipped,
                           cams if with_cam and len(cams) == len(rows) else None)
    if k_class:
        out.classes, out.probabilities, out.decided = np.array(truths), np.stack(probs), np.array(decided)
    return out


@dataclass
class EvalResult:
    metrics: dict[str, Any]
    threshold: float
    threshold_source: str
    provider: str
    out_dir: Path
    rows: list[dict[str, Any]]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    report_text: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    evaluated: SplitPredictions | None = None
    validation: SplitPredictions | None = None
    history: list[dict[str, float]] | None = None
    files: list[str] = field(default_factory=list)
    preprocessing: Preprocessing | None = None  # for the HTML report's case images
    max_pixels: int = DEFAULT_MAX_PIXELS
