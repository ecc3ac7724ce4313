"""Every metric per subgroup (sex, age, site, skin tone...) with stratified-bootstrap CIs. No torch.

Rules, decided here once:

* **Grouping a column.** Empty values (and ``NA``, ``nan``, ``unknown``) form the group ``missing``, always
  shown. A column whose other values are all numbers and take more than ``MAX_NUMERIC_LEVELS`` distinct
  values is binned into ``NUMERIC_BINS`` quantile bins (edges from the evaluated images, so the bins hold
  similar numbers of images; a bin is ``[low, high)``, the last ``[low, high]``); a numeric column with
  few levels (Fitzpatrick I-VI, age in decades) and any text column is kept as it is.
* **Too small.** A metric's value is shown for a group only when each class its definition needs holds
  at least ``MIN_PER_CLASS`` images (sensitivity: positives; specificity: negatives; everything else,
  accuracy included, both classes: in a one-class group accuracy is sensitivity or specificity in disguise
  and would be compared with an overall accuracy of another class mix). Otherwise the group is still
  listed, with its counts, and the metric reads "too small" ("one class only" when the group has no image of a
  class the metric needs: however large the group, the metric does not exist there). A group with fewer than
  ``MIN_PER_CLASS`` positives or negatives is marked ``too_small``, one without any of a class ``one_class``.
* **Flag.** A shown metric is flagged when the group's whole CI lies below the overall value (every
  metric here is better when higher). With many groups and metrics some flags are expected by chance
  (each CI misses its true value 5 % of the time): a flag is a lead to examine, not a finding.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .metrics import METRIC_NAMES, binary_metrics, bootstrap_ci

MIN_PER_CLASS = 10
NUMERIC_BINS = 4
MAX_NUMERIC_LEVELS = 8  # at most this many distinct numbers: levels, not bins
MISSING = "missing"
MISSING_VALUES = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown"})
ONLY_POSITIVES = frozenset({"sensitivity"})
ONLY_NEGATIVES = frozenset({"specificity"})


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _fmt(value: float) -> str:
    return f"{value:g}"


def group_labels(values: Sequence[str]) -> tuple[list[str], str]:
    """Each image's group label for one column, and a sentence saying how the column was grouped."""
    cleaned = [v.strip() for v in values]
    present = [v for v in cleaned if v.lower() not in MISSING_VALUES]
    numbers = [_number(v) for v in present]
    if present and all(n is not None for n in numbers) and len(set(numbers)) > MAX_NUMERIC_LEVELS:
        edges = np.unique(np.quantile(np.array(numbers, dtype=float), np.linspace(0, 1, NUMERIC_BINS + 1)))
        names = [f"[{_fmt(lo)}, {_fmt(hi)}{']' if i == len(edges) - 2 else ')'}"
                 for i, (lo, hi) in enumerate(itertools.pairwise(edges))]
        labels = []
        for v in cleaned:
            if v.lower() in MISSING_VALUES:
                labels.append(MISSING)
                continue
            i = int(np.searchsorted(edges, float(v), side="right")) - 1
            labels.append(names[min(max(i, 0), len(names) - 1)])
        how = (f"numeric, {len(set(numbers))} distinct values: {len(names)} quantile bins with edges "
               f"{', '.join(_fmt(e) for e in edges)}")
        return labels, how
    labels = [MISSING if v.lower() in MISSING_VALUES else v for v in cleaned]
    return labels, "categories as written" + (" (numeric levels)" if present and all(
        n is not None for n in numbers) else "")


def _order(groups: list[str], known: Sequence[str] = ()) -> list[str]:
    """``known`` names in their order, then numeric bins by lower edge, numeric levels by value, text
    alphabetically; ``missing`` last."""
    rank = {name: i for i, name in enumerate(known)}

    def key(name: str) -> tuple[int, float, str]:
        if name in rank:
            return (0, rank[name], name)
        if name == MISSING:
            return (3, 0.0, name)
        number = _number(name.lstrip("[").split(",")[0])
        return (1, number, name) if number is not None else (2, 0.0, name)
    return sorted(set(groups), key=key)


ONE_CLASS = "one class only"  # the reason a group that lacks a class gives, whatever its size


def _needs(name: str, n_pos: int, n_neg: int, minimum: int) -> str | None:
    """Why ``name`` is not shown for a group with these counts, or None if it is. A group that lacks a class the
    metric needs says so ("one class only: no negatives"), not "too small": more images of it would not help."""
    if name in ONLY_POSITIVES:
        return None if n_pos >= minimum else f"{ONE_CLASS}: no positives" if not n_pos else \
            f"fewer than {minimum} positives"
    if name in ONLY_NEGATIVES:
        return None if n_neg >= minimum else f"{ONE_CLASS}: no negatives" if not n_neg else \
            f"fewer than {minimum} negatives"
    if min(n_pos, n_neg) >= minimum:
        return None
    if not n_pos or not n_neg:
        return f"{ONE_CLASS}: no {'positives' if not n_pos else 'negatives'}"
    return f"fewer than {minimum} positives or negatives"


def subgroup_table(y_true: ArrayLike, y_prob: ArrayLike, threshold: float, groups: Sequence[str], *,
                   column: str, how: str = "", bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95,
                   min_per_class: int = MIN_PER_CLASS, estimate: bool = False,
                   order: Sequence[str] = ()) -> dict[str, Any]:
    """One column's table: the overall metrics and, per group, size, metrics, CIs, what is too small, flags.

    ``groups`` gives each image's group label (see :func:`group_labels`). JSON-ready; undefined values NaN.
    ``estimate`` marks a column computed by skinonnx (estimated ITA) rather than read from the data;
    ``order`` lists group names that come first, in that order (e.g. the ITA categories, lightest first).
    """
    truth = np.asarray(y_true).astype(np.int64)
    prob = np.asarray(y_prob, dtype=np.float64)
    labels = np.asarray(list(groups), dtype=object)
    if not truth.shape == prob.shape == labels.shape:
        raise ValueError(f"y_true, y_prob and groups differ in length ({truth.size}, {prob.size}, {labels.size})")
    overall = binary_metrics(truth, prob, threshold)
    rows = []
    for name in _order(list(labels), order):
        mask = labels == name
        t, p = truth[mask], prob[mask]
        n_pos, n_neg = int(t.sum()), int(t.size - t.sum())
        metrics = binary_metrics(t, p, threshold)
        ci = bootstrap_ci(t, p, threshold, n_resamples=bootstrap, confidence=confidence, seed=seed) if bootstrap \
            else None
        shown: dict[str, float | None] = {}
        intervals: dict[str, list[float] | None] = {}
        too_small: dict[str, str] = {}
        below: list[str] = []
        for metric in METRIC_NAMES:
            reason = _needs(metric, n_pos, n_neg, min_per_class)
            if reason:
                too_small[metric] = reason
                shown[metric], intervals[metric] = None, None
                continue
            shown[metric] = metrics[metric]
            intervals[metric] = None if ci is None else [ci[metric][0], ci[metric][1]]
            hi = None if ci is None else ci[metric][1]
            if hi is not None and not math.isnan(hi) and not math.isnan(overall[metric]) and hi < overall[metric]:
                below.append(metric)
        rows.append({"group": name, "n": int(t.size), "n_positive": n_pos, "n_negative": n_neg,
                     "too_small": min(n_pos, n_neg) < min_per_class, "one_class": not n_pos or not n_neg,
                     "metrics": shown, "ci": intervals,
                     "not_shown": too_small, "below_overall": below})
    return {"column": column, "estimate": estimate, "grouping": how, "min_per_class": min_per_class,
            "threshold": float(threshold), "overall": {k: overall[k] for k in METRIC_NAMES},
            "n": int(truth.size), "groups": rows}
