"""The decision an image gets — a class, or "not assessed" — as the ONNX file makes it.

Every export computes it in the graph: ``label`` (int64 [N], an index into ``classes``) and
``in_distribution`` (bool [N]). Consumers read those outputs (:func:`decide`); this module holds the
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
from .contract import IN_DISTRIBUTION_OUTPUT, LABEL_OUTPUT, OOD_OUTPUT, OOD_REFUSAL, ModelContract

#: what the decision outputs mean, for ``info``, the v2 model metadata and the Triton repository
DECISION_DOC = {
    LABEL_OUTPUT: "int64 [N]: index into 'classes' at the file's rule: the positive class where its calibrated "
                  "probability >= 'decision_threshold' (float32), else the other",
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


@dataclass(frozen=True)
class DecisionRule:
    """The rule a file's graph applies: the positive class's probability against ``threshold``; an image is in
    distribution where its ``ood_score`` is finite and at most ``ood_threshold`` (None: no OOD score)."""

    positive_index: int
    threshold: float
    ood_threshold: float | None = None

    @classmethod
    def of(cls, contract: ModelContract, threshold: float | None = None) -> DecisionRule:
        """The file's own rule, or the same rule at an overridden ``threshold`` (checked: in [0, 1])."""
        if threshold is not None and not 0.0 <= threshold <= 1.0:  # also refuses NaN
            raise SkinOnnxError(f"threshold {threshold} is not in [0, 1]")
        return cls(contract.positive_index, contract.threshold if threshold is None else float(threshold),
                   contract.ood_threshold)

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """int64 [N]: the positive class where ``p_positive >= threshold`` (float32, as the graph), else the other."""
        pos = self.positive_index
        return np.where(predicted_positive(np.asarray(probabilities)[:, pos], self.threshold), pos, 1 - pos
                        ).astype(np.int64)

    def in_distribution(self, probabilities: np.ndarray, ood_scores: np.ndarray | None) -> np.ndarray:
        """bool [N]: a probability that is a number and (with an OOD score) a finite ``ood_score <= ood_threshold``."""
        inside = ~np.isnan(np.asarray(probabilities, np.float64)[:, self.positive_index])
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


def label_text(contract: ModelContract, label: int, in_distribution: bool) -> str:
    """What every consumer shows: the class name, or the refusal (the probabilities stay for auditing)."""
    return contract.classes[int(label)] if in_distribution else OOD_REFUSAL
