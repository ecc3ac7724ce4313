"""Two-sample drift tests between the test-time reference and a new batch (numpy + scipy, no torch).

Two tests, both controlling the false-alarm rate at ``alpha`` for the batch as a whole:

* ``ks`` (default): a two-sample Kolmogorov-Smirnov test per 1-d quantity (the model's probability,
  ``ood_score`` when present, each image statistic), p-values adjusted by Holm's step-down method
  (family-wise error <= alpha under any dependence between the quantities; never less powerful than
  Bonferroni). The batch's p-value is the smallest adjusted one. Each quantity keeps its own verdict,
  which says *what* moved.
* ``mmd``: the maximum mean discrepancy with a Gaussian kernel (bandwidth: median pairwise distance of the
  pooled sample) on the same quantities standardised by the reference, p-value from a permutation test.
  One test on the joint distribution: it can see a change in correlations no single KS test sees, but
  does not say which quantity moved.

K-class models add a categorical quantity, the distribution of the decided classes (:func:`class_distribution_test`,
a chi-square test of homogeneity on the 2 x K counts); :func:`with_class_distribution` puts its p-value in the same
Holm family as the KS p-values (``ks``) or beside the MMD p-value (``mmd``), so the batch's false-alarm rate stays
at ``alpha``.

Why scipy suffices: the quantities are a handful of scalars per image, for which KS (scipy.stats.ks_2samp,
exact p-values for small samples) and an MMD permutation test over a few hundred points are cheap and
standard; alibi-detect implements the same two tests (its KSDrift also uses scipy's KS with a Bonferroni
correction) and would add TensorFlow or PyTorch to a deploy path that must stay torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

DEFAULT_ALPHA = 0.05
METHODS = ("ks", "mmd")
MMD_PERMUTATIONS = 1000


def holm(pvalues: ArrayLike) -> NDArray[np.float64]:
    """Holm-adjusted p-values, in the input order (reject where adjusted <= alpha)."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


def _pair(reference: Mapping[str, ArrayLike], new: Mapping[str, ArrayLike]
          ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]:
    names = [k for k in reference if k in new]
    if not names:
        raise ValueError("the reference and the new batch share no quantity to compare")
    out = {}
    for k in names:
        ref = np.asarray(reference[k], dtype=np.float64)
        cur = np.asarray(new[k], dtype=np.float64)
        ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
        if ref.size < 2 or cur.size < 2:
            raise ValueError(f"'{k}': need at least 2 finite values on each side ({ref.size} and {cur.size})")
        out[k] = (ref, cur)
    return out


def ks_test(reference: Mapping[str, ArrayLike], new: Mapping[str, ArrayLike], *,
            alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """KS per quantity with Holm's correction; ``drift`` when any adjusted p-value is <= ``alpha``."""
    from scipy.stats import ks_2samp

    pairs = _pair(reference, new)
    raw = {k: ks_2samp(r, c) for k, (r, c) in pairs.items()}
    adjusted = holm([raw[k].pvalue for k in pairs])
    quantities = {}
    for (k, (r, c)), adj in zip(pairs.items(), adjusted, strict=True):
        quantities[k] = {"statistic": float(raw[k].statistic), "p_value": float(raw[k].pvalue),
                         "p_adjusted": float(adj), "drift": bool(adj <= alpha),
                         "reference_median": float(np.median(r)), "new_median": float(np.median(c)),
                         "n_reference": int(r.size), "n_new": int(c.size)}
    p_value = float(adjusted.min())
    return {"method": "ks", "correction": "holm", "alpha": alpha, "p_value": p_value, "drift": p_value <= alpha,
            "quantities": quantities}


def _stack(pairs: dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]
           ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Rows = images; columns standardised by the reference's mean and standard deviation."""
    n_ref = {r.size for r, _ in pairs.values()}
    n_new = {c.size for _, c in pairs.values()}
    if len(n_ref) != 1 or len(n_new) != 1:
        raise ValueError("the mmd test needs every quantity for every image (no missing values)")
    ref = np.column_stack([r for r, _ in pairs.values()])
    cur = np.column_stack([c for _, c in pairs.values()])
    mean, std = ref.mean(axis=0), ref.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (ref - mean) / std, (cur - mean) / std


def mmd_statistics(kernel: NDArray[np.float64], first: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Unbiased MMD² from the pooled kernel matrix, for each column of ``first`` (True = row in sample 1).

    ``first`` is (N,) or (N, B): one column per labelling, so all permutations are one matrix product.
    """
    s = np.asarray(first, dtype=np.float64).reshape(kernel.shape[0], -1)
    t = 1.0 - s
    n, m = s.sum(axis=0), t.sum(axis=0)
    diag = np.diag(kernel)
    ks, kt = kernel @ s, kernel @ t
    within_a = ((s * ks).sum(axis=0) - diag @ s) / (n * (n - 1))
    within_b = ((t * kt).sum(axis=0) - diag @ t) / (m * (m - 1))
    between = (s * kt).sum(axis=0) / (n * m)
    return within_a + within_b - 2.0 * between


def mmd_test(reference: Mapping[str, ArrayLike], new: Mapping[str, ArrayLike], *, alpha: float = DEFAULT_ALPHA,
             permutations: int = MMD_PERMUTATIONS, seed: int = 0) -> dict[str, Any]:
    """Gaussian-kernel MMD permutation test on the standardised quantities."""
    from scipy.spatial.distance import pdist, squareform

    pairs = _pair(reference, new)
    ref, cur = _stack(pairs)
    pooled = np.vstack([ref, cur])
    distances = squareform(pdist(pooled, "sqeuclidean"))
    bandwidth = float(np.median(distances[np.triu_indices_from(distances, 1)])) or 1.0
    kernel = np.exp(-distances / bandwidth)
    first = np.zeros(len(pooled), dtype=bool)
    first[:len(ref)] = True
    observed = float(mmd_statistics(kernel, first)[0])
    rng = np.random.default_rng(seed)
    shuffled = np.column_stack([rng.permutation(first) for _ in range(permutations)])
    exceed = int(np.count_nonzero(mmd_statistics(kernel, shuffled) >= observed))
    p_value = (1 + exceed) / (1 + permutations)
    return {"method": "mmd", "kernel": "gaussian, median-distance bandwidth", "permutations": permutations,
            "alpha": alpha, "statistic": observed, "p_value": float(p_value), "drift": p_value <= alpha,
            "quantities": {k: {"reference_median": float(np.median(r)), "new_median": float(np.median(c)),
                               "n_reference": int(r.size), "n_new": int(c.size)} for k, (r, c) in pairs.items()}}


def drift_test(reference: Mapping[str, ArrayLike], new: Mapping[str, ArrayLike], *, method: str = "ks",
               alpha: float = DEFAULT_ALPHA, seed: int = 0) -> dict[str, Any]:
    """Run ``method`` (``ks`` or ``mmd``); the result always has ``p_value``, ``drift`` and ``quantities``."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if method == "ks":
        return ks_test(reference, new, alpha=alpha)
    if method == "mmd":
        return mmd_test(reference, new, alpha=alpha, seed=seed)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def class_distribution_test(reference: Sequence[str], new: Sequence[str], classes: Sequence[str]) -> dict[str, Any]:
    """Chi-square test of homogeneity of the decided classes' counts (classes decided on neither side left out of
    the table; p = 1 when fewer than two classes remain)."""
    from scipy.stats import chi2_contingency

    ref = np.array([sum(1 for c in reference if c == name) for name in classes])
    cur = np.array([sum(1 for c in new if c == name) for name in classes])
    used = (ref + cur) > 0
    if used.sum() < 2 or not ref.sum() or not cur.sum():
        statistic, p_value, dof = 0.0, 1.0, 0
    else:
        result = chi2_contingency(np.vstack([ref[used], cur[used]]), correction=False)
        statistic, p_value, dof = float(result.statistic), float(result.pvalue), int(result.dof)
    return {"test": "chi-square homogeneity of the decided classes (2 x K counts)", "classes": list(classes),
            "reference_counts": ref.tolist(), "new_counts": cur.tolist(),
            "reference_share": (ref / max(ref.sum(), 1)).tolist(), "new_share": (cur / max(cur.sum(), 1)).tolist(),
            "statistic": statistic, "dof": dof, "p_value": p_value}


def with_class_distribution(result: dict[str, Any], classes_test: dict[str, Any]) -> dict[str, Any]:
    """``result`` of :func:`drift_test` with the class distribution's test joined: one Holm family with the KS
    p-values (``ks``) or with the MMD p-value (``mmd``); the batch's ``p_value`` and ``drift`` cover both."""
    alpha = result["alpha"]
    out = {**result, "quantities": {k: dict(v) for k, v in result["quantities"].items()}}
    if result["method"] == "ks":
        names = list(out["quantities"])
        adjusted = holm([out["quantities"][k]["p_value"] for k in names] + [classes_test["p_value"]])
        for k, adj in zip(names, adjusted[:-1], strict=True):
            out["quantities"][k].update(p_adjusted=float(adj), drift=bool(adj <= alpha))
    else:
        adjusted = holm([result["p_value"], classes_test["p_value"]])
        out["p_value_mmd_adjusted"] = float(adjusted[0])
    out["class_distribution"] = {**classes_test, "p_adjusted": float(adjusted[-1]),
                                 "drift": bool(adjusted[-1] <= alpha)}
    out["p_value"] = float(adjusted.min())
    out["drift"] = out["p_value"] <= alpha
    return out
