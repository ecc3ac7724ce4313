"""The decision an image gets — a class, or "not assessed" — as the ONNX file makes it.

Every export computes it in the graph: ``p_malignant`` (float32 [N], the malignancy group's summed probability),
``malignant`` (bool [N], ``p_malignant >= threshold``), ``label`` (int64 [N], an index into ``classes``) and
``in_distribution`` (bool [N]). Two classes: ``label`` is the threshold rule on the positive class (the group of
one). More: ``label = argmax(log p + class_bias)`` (the diagnosis; ``class_bias`` all zero is argmax).

Consumers read those outputs (:func:`decide`); this module holds the
same rule once in Python for the two cases where the graph's own answer cannot be used: a threshold the
user overrides (``predict --threshold``, ``test``'s policies) and files exported before the outputs
existed. Both comparisons are made in float32, as the graph makes them, so the two agree bit for bit.
No torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import SkinOnnxError
from .contract import (
    IN_DISTRIBUTION_OUTPUT,
    LABEL_OUTPUT,
    MALIGNANT_OUTPUT,
    OOD_OUTPUT,
    OOD_REFUSAL,
    P_MALIGNANT_OUTPUT,
    ModelContract,
)

#: what the decision outputs mean, for ``info``, the v2 model metadata and the Triton repository
DECISION_DOC = {
    P_MALIGNANT_OUTPUT: "float32 [N]: the calibrated probability of the malignancy group 'malignant_classes' (the "
                        "sum of their probabilities; two classes: the positive class's probability)",
    MALIGNANT_OUTPUT: "bool [N]: p_malignant >= 'decision_threshold' (float32)",
    LABEL_OUTPUT: "int64 [N]: index into 'classes' at the file's rule: two classes: the positive class where "
                  "p_malignant >= 'decision_threshold' (float32), else the other; more: argmax(log(probabilities) "
                  "+ 'class_bias') in float32 (the first on a tie)",
    IN_DISTRIBUTION_OUTPUT: "bool [N]: false = not assessed (show no class): 'ood_score' above 'ood_threshold', "
                            "or a NaN/inf score; true for every image when the file has no 'ood_score'",
}


def predicted_positive(p_positive: np.ndarray, threshold: float) -> np.ndarray:
    """THE threshold comparison: ``p >= threshold`` in float32, as the graph compares (metrics use it too)."""
    return np.asarray(p_positive, np.float64).astype(np.float32) >= np.float32(threshold)


def accepted(ood_scores: np.ndarray, ood_threshold: float) -> np.ndarray:
    """THE out-of-distribution comparison: a finite ``ood_score <= ood_threshold`` in float32, as the graph."""
    scores = np.asarray(ood_scores, np.float64).reshape(-1).astype(np.float32)
    return np.isfinite(scores) & (scores <= np.float32(ood_threshold))


def biased_decision(log_probs: np.ndarray, offsets: np.ndarray | list[float]) -> np.ndarray:
    """THE diagnosis of more than two classes: argmax(log p + offsets) per row (the first class on a tie)."""
    return np.argmax(np.asarray(log_probs) + np.asarray(offsets, dtype=np.asarray(log_probs).dtype),
                     axis=1).astype(np.int64)


@dataclass(frozen=True)
class DecisionRule:
    """The rule a file's graph applies: ``p_malignant`` (the group's summed probability) against ``threshold``;
    ``label`` by that threshold (two classes without a bias) or argmax(log p + ``class_bias``); an image is in
    distribution where its ``ood_score`` is finite and at most ``ood_threshold`` (None: no OOD score)."""

    positive_index: int
    threshold: float
    ood_threshold: float | None = None
    malignant_group: tuple[int, ...] = ()  # () = (positive_index,)
    class_bias: tuple[float, ...] | None = None  # None: two classes (threshold rule) or argmax

    @classmethod
    def of(cls, contract: ModelContract, threshold: float | None = None) -> DecisionRule:
        """The file's own rule, or the same rule at an overridden ``threshold`` (checked: in [0, 1])."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:  # also refuses NaN
            raise SkinOnnxError(f"threshold {threshold} is not in [0, 1]")
        return cls(contract.positive_index, contract.threshold if threshold is None else float(threshold),
                   contract.ood_threshold, contract.malignant_group, contract.class_bias)

    @property
    def group(self) -> tuple[int, ...]:
        return self.malignant_group or (self.positive_index,)

    def p_malignant(self, probabilities: np.ndarray) -> np.ndarray:
        """float32 [N]: the malignancy group's probabilities summed (float32, in class order, as the graph)."""
        probs = np.asarray(probabilities, np.float32)
        total = probs[:, self.group[0]].copy()
        for i in self.group[1:]:
            total = total + probs[:, i]
        return total

    def malignant(self, probabilities: np.ndarray) -> np.ndarray:
        """bool [N]: ``p_malignant >= threshold`` (float32)."""
        return predicted_positive(self.p_malignant(probabilities), self.threshold)

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """int64 [N]: two classes without a bias: the positive class where ``p_positive >= threshold`` (float32,
        as the graph), else the other; otherwise argmax(log p + class_bias) in float32."""
        probs = np.asarray(probabilities)
        pos = self.positive_index
        if probs.shape[1] == 2 and self.class_bias is None:
            return np.where(predicted_positive(probs[:, pos], self.threshold), pos, 1 - pos).astype(np.int64)
        offsets = self.class_bias if self.class_bias is not None else [0.0] * probs.shape[1]
        with np.errstate(divide="ignore", invalid="ignore"):
            return biased_decision(np.log(probs.astype(np.float32)), np.asarray(offsets, np.float32))

    def in_distribution(self, probabilities: np.ndarray, ood_scores: np.ndarray | None) -> np.ndarray:
        """bool [N]: a probability that is a number and (with an OOD score) a finite ``ood_score <= ood_threshold``."""
        inside = ~np.isnan(self.p_malignant(probabilities))
        if self.ood_threshold is not None:
            if ood_scores is None:
                raise SkinOnnxError(f"the model has an '{OOD_OUTPUT}' threshold but no score was computed")
            inside &= accepted(ood_scores, self.ood_threshold)
        return inside


def decide(outputs: Mapping[str, np.ndarray], contract: ModelContract, threshold: float | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """``(label int64 [N], in_distribution bool [N])`` for one run's named outputs.

    The graph's own outputs when it has them and the threshold is the file's; otherwise the same rule
    applied here (an override, or a file exported before the decision outputs existed)."""
    own = threshold is None or float(threshold) == contract.threshold
    rule = DecisionRule.of(contract, threshold)
    probabilities = outputs["probabilities"]
    if own and LABEL_OUTPUT in outputs:
        label = np.asarray(outputs[LABEL_OUTPUT], np.int64).reshape(-1)
    else:
        label = rule.labels(probabilities)
    if IN_DISTRIBUTION_OUTPUT in outputs:
        inside = np.asarray(outputs[IN_DISTRIBUTION_OUTPUT], bool).reshape(-1)
    else:
        inside = rule.in_distribution(probabilities, outputs.get(OOD_OUTPUT))
    return label, inside


def malignancy(outputs: Mapping[str, np.ndarray], contract: ModelContract, threshold: float | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(p_malignant float32 [N], malignant bool [N])``: the graph's outputs when it has them (and, for
    ``malignant``, the threshold is the file's), else the same rule applied here."""
    rule = DecisionRule.of(contract, threshold)
    own = threshold is None or float(threshold) == contract.threshold
    if P_MALIGNANT_OUTPUT in outputs:
        p = np.asarray(outputs[P_MALIGNANT_OUTPUT], np.float32).reshape(-1)
    else:
        p = rule.p_malignant(outputs["probabilities"])
    if own and MALIGNANT_OUTPUT in outputs:
        return p, np.asarray(outputs[MALIGNANT_OUTPUT], bool).reshape(-1)
    return p, predicted_positive(p, rule.threshold)


def label_text(contract: ModelContract, label: int, in_distribution: bool) -> str:
    """What every consumer shows: the class name, or the refusal (the probabilities stay for auditing)."""
    return contract.classes[int(label)] if in_distribution else OOD_REFUSAL
