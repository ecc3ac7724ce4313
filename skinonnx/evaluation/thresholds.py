"""Operating-point (decision threshold) selection on validation probabilities (no torch).

A case is predicted malignant when ``prob >= threshold``. Policies, as text
(:func:`parse_policy`) or :class:`ThresholdPolicy`:

* ``youden`` - the threshold maximising Youden's J = sensitivity + specificity - 1 = TPR - FPR;
* ``sensitivity:S`` (0 < S <= 1) - the *highest* threshold whose validation sensitivity is
  still >= S. Sensitivity only falls as the threshold rises, so this is the operating point
  with the best specificity among those that reach S (the "lowest threshold reaching that
  sensitivity" wording of the issue, read sensibly: any lower threshold also reaches S but
  only trades specificity away);
* ``fixed:T`` (0 <= T <= 1) - T itself.

Candidate thresholds for the data-driven policies are the observed probabilities: the chosen
ROC point is ``roc_point`` (a validation image's own score). The threshold actually returned
(``value``) is the midpoint between it and the next lower observed score. On the validation data
``prob >= value`` gives exactly the same confusion matrix, but no image sits *on* the threshold:
at the observed score itself one validation image would flip with any change in the last digits
(another runtime, a GPU, INT8, a re-implemented resize), and the gap below it is free margin.
:func:`choose_threshold` returns a :class:`ThresholdChoice`: the value plus the validation
sensitivity / specificity it gives, and a ``note`` that is set only when the policy could not
be applied (validation data with a single class) and the 0.5 fallback was used instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
from numpy.typing import ArrayLike

from .metrics import _labels, _same_length, _scores, confusion

PolicyKind = Literal["youden", "sensitivity", "fixed"]
FALLBACK_THRESHOLD = 0.5
ACCEPTED_FORMS = (
    "'youden', 'sensitivity:S' with 0 < S <= 1 (e.g. 'sensitivity:0.95'), "
    "or 'fixed:T' with 0 <= T <= 1 (e.g. 'fixed:0.5')"
)


@dataclass(frozen=True)
class ThresholdPolicy:
    """How to pick the threshold; ``str(policy)`` round-trips through :func:`parse_policy`."""

    kind: PolicyKind
    value: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "youden":
            if self.value is not None:
                raise ValueError("'youden' takes no value")
            return
        if self.kind not in ("sensitivity", "fixed"):
            raise ValueError(f"unknown policy {self.kind!r}")
        if self.value is None or isinstance(self.value, bool):
            raise ValueError(f"'{self.kind}' needs a numeric value")
        value = float(self.value)
        if self.kind == "sensitivity" and not 0.0 < value <= 1.0:
            raise ValueError(f"sensitivity must be in (0, 1], got {self.value!r}")
        if self.kind == "fixed" and not 0.0 <= value <= 1.0:
            raise ValueError(f"fixed threshold must be in [0, 1], got {self.value!r}")
        object.__setattr__(self, "value", value)

    def __str__(self) -> str:
        if self.kind == "youden":
            return "youden"
        return f"{self.kind}:{self.value!r}"  # repr(float) is the shortest exact round trip


def parse_policy(text: str) -> ThresholdPolicy:
    """Parse ``youden``, ``sensitivity:S`` or ``fixed:T`` (case and spaces around parts ignored).

    Raises ``ValueError`` naming the problem and listing the accepted forms.
    """
    if not isinstance(text, str):
        raise ValueError(_bad(text, "expected a string"))
    kind, sep, raw = text.strip().partition(":")
    kind = kind.strip().lower()
    raw = raw.strip()
    if kind == "youden":
        if sep:
            raise ValueError(_bad(text, "'youden' takes no value"))
        return ThresholdPolicy("youden")
    if kind in ("sensitivity", "fixed"):
        if not raw:
            raise ValueError(_bad(text, f"'{kind}' needs a value after ':'"))
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(_bad(text, f"{raw!r} is not a number")) from None
        if not math.isfinite(value):
            raise ValueError(_bad(text, f"{raw!r} is not a finite number"))
        try:
            return ThresholdPolicy(cast(PolicyKind, kind), value)
        except ValueError as exc:
            raise ValueError(_bad(text, str(exc))) from None
    reason = "empty policy" if not kind else f"unknown policy {kind!r}"
    raise ValueError(_bad(text, reason))


def _bad(text: object, reason: str) -> str:
    return f"invalid threshold policy {text!r}: {reason}; accepted forms: {ACCEPTED_FORMS}"


@dataclass(frozen=True)
class ThresholdChoice:
    """A chosen threshold and how it behaves on the data it was chosen on.

    ``sensitivity`` / ``specificity`` are measured on that data at ``prob >= value`` (NaN when
    undefined). ``note`` is ``None`` when the policy was applied as asked; otherwise it says why
    :data:`FALLBACK_THRESHOLD` was used instead (``fell_back`` is then true). ``float(choice)``
    is ``choice.value``.
    """

    value: float
    policy: ThresholdPolicy
    sensitivity: float = float("nan")
    specificity: float = float("nan")
    note: str | None = None
    roc_point: float | None = None  # data-driven policies: the observed score that defines the ROC point

    @property
    def fell_back(self) -> bool:
        return self.note is not None

    def __float__(self) -> float:
        return self.value


def choose_threshold(
    policy: ThresholdPolicy | str, y_true: ArrayLike, y_prob: ArrayLike
) -> ThresholdChoice:
    """Pick the decision threshold for ``policy`` on validation labels and probabilities.

    ``youden``: ties in J go to the higher threshold (``roc_point``; ``value`` lies halfway below
    it). ``sensitivity:S``: highest threshold with
    sensitivity >= S (always exists, the lowest observed probability gives sensitivity 1).
    ``fixed:T``: T, whatever the data. When the data lack a class (or are empty) the data-driven
    policies cannot be applied: the choice is then 0.5 with an explanatory ``note``; no error.
    """
    pol = parse_policy(policy) if isinstance(policy, str) else policy
    truth = _labels(y_true)
    probs = _scores(y_prob)
    _same_length(truth, probs)
    n_pos = int(np.count_nonzero(truth == 1))
    n_neg = int(truth.size - n_pos)

    note: str | None = None
    roc_point: float | None = None
    if pol.kind == "fixed":
        assert pol.value is not None
        value = pol.value
    elif n_pos == 0 or n_neg == 0:
        value = FALLBACK_THRESHOLD
        note = (
            f"policy '{pol}' needs both classes in the validation data, which has {n_pos} "
            f"malignant and {n_neg} benign cases; fell back to threshold {FALLBACK_THRESHOLD}"
        )
    else:
        candidates = np.unique(probs)[::-1]  # descending
        pos_sorted = np.sort(probs[truth == 1])
        neg_sorted = np.sort(probs[truth == 0])
        # counts with prob >= t, for every candidate t
        tp = n_pos - np.searchsorted(pos_sorted, candidates, side="left")
        fp = n_neg - np.searchsorted(neg_sorted, candidates, side="left")
        if pol.kind == "youden":
            # J * n_pos * n_neg in exact integers, so equal J values tie exactly.
            j = tp.astype(np.int64) * n_neg - fp.astype(np.int64) * n_pos
            best = int(np.argmax(j))  # first maximum = highest threshold
        else:
            assert pol.value is not None
            # tp / n_pos is the same float the sensitivity metric computes, so the check agrees
            best = int(np.argmax(tp / n_pos >= pol.value))  # TPR rises along the list
        roc_point = float(candidates[best])
        # halfway down to the next lower observed score: same confusion matrix, no image on the edge
        value = roc_point if best + 1 == candidates.size else float((candidates[best] + candidates[best + 1]) / 2)

    counts = confusion(truth, (probs >= value).astype(np.int64))
    sens = counts.tp / n_pos if n_pos else float("nan")
    spec = counts.tn / n_neg if n_neg else float("nan")
    return ThresholdChoice(value=value, policy=pol, sensitivity=sens, specificity=spec, note=note,
                           roc_point=roc_point)
