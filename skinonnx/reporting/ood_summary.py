"""The ``ood`` section of `test`'s summary.json: how many images the model refused, and the metrics on the rest.

The headline metrics of a report stay those on *all* evaluated images (a refusal must not flatter the
numbers); this section adds the same metrics on the accepted images beside them, the refusal count and
its expected value (``1 - accept`` of in-distribution images, with its binomial sampling error), so a
reader sees both what the model does when it answers and how often it declines. Pure functions; no torch.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..deploy.contract import OOD_KEY, OOD_OUTPUT, OOD_REFUSAL
from ..evaluation.metrics import binary_metrics, bootstrap_ci


def ood_section(rows: Sequence[Mapping[str, Any]], y_true: np.ndarray, y_prob: np.ndarray, threshold: float,
                ood_threshold: float | None, metadata: Mapping[str, str], *, bootstrap: int = 1000, seed: int = 0,
                confidence: float = 0.95) -> dict[str, Any] | None:
    """None for a model without an OOD score; else the refusals and the metrics on the accepted images.

    ``rows`` carry ``in_distribution`` (bool) and ``ood_score`` in the order of ``y_true`` / ``y_prob``."""
    if ood_threshold is None:
        return None
    accepted = np.array([bool(r["in_distribution"]) for r in rows])
    n, n_refused = len(rows), int((~accepted).sum())
    record = _record(metadata)
    accept = float(record.get("threshold_fit", {}).get("accept", math.nan))
    expected = round(1.0 - accept, 6) if math.isfinite(accept) else None
    section: dict[str, Any] = {
        "method": record.get("method"), "covariance": record.get("covariance"), "ood_threshold": ood_threshold,
        "accept": accept if math.isfinite(accept) else None, "refusal": OOD_REFUSAL,
        "n": n, "n_refused": n_refused, "share_refused": n_refused / n if n else None,
        "expected_share_refused": expected,
        "expected_share_refused_sd": None if expected is None or not n else math.sqrt(expected * (1 - expected) / n),
        "n_refused_by_class": {label: int(sum(1 for r, a in zip(rows, accepted, strict=True)
                                              if r["label"] == label and not a))
                               for label in sorted({str(r["label"]) for r in rows})},
        "median_score": float(np.median([float(r[OOD_OUTPUT]) for r in rows])) if n else None,
        "metrics_accepted": None, "ci_accepted": None,
        "refused": [str(r["path"]) for r, a in zip(rows, accepted, strict=True) if not a],
    }
    y, p = np.asarray(y_true)[accepted], np.asarray(y_prob)[accepted]
    if len(y):
        section["metrics_accepted"] = binary_metrics(y, p, threshold)
        if bootstrap and 0 < int(y.sum()) < len(y):
            section["ci_accepted"] = {k: list(v) for k, v in bootstrap_ci(
                y, p, threshold, n_resamples=bootstrap, seed=seed, confidence=confidence).items()}
    return section


def terminal_lines(section: Mapping[str, Any] | None, headline: Mapping[str, Any]) -> list[str]:
    """Two or three lines for `test`'s table: refusals, and AUC/sensitivity/specificity all vs accepted."""
    if not section:
        return []
    expected = section["expected_share_refused"]
    lines = [f"out of distribution: {section['n_refused']} of {section['n']} images refused "
             f"({section['share_refused']:.1%}; '{OOD_REFUSAL}')"
             + (f", expected {expected:.1%} ± {section['expected_share_refused_sd']:.1%} for images like the "
                "validation split" if expected is not None else "")]
    accepted = section["metrics_accepted"]
    if accepted:
        def three(m: Mapping[str, Any]) -> str:
            return ", ".join(f"{k} {m[k]:.4f}" if isinstance(m.get(k), float) and math.isfinite(m[k]) else f"{k} -"
                             for k in ("roc_auc", "sensitivity", "specificity"))

        lines.append(f"  all {section['n']} images (headline): {three(headline)}")
        lines.append(f"  the {section['n'] - section['n_refused']} accepted only:     {three(accepted)}")
    return lines


def html_section(section: Mapping[str, Any] | None, headline: Mapping[str, Any],
                 ci: Mapping[str, Any] | None = None) -> str:
    """report.html's ``<section id="ood">``: how many images were refused (and the expected share), and AUC,
    sensitivity and specificity on all images beside those on the accepted ones; the refused images are marked
    in the galleries below it."""
    if not section:
        return ""
    e = html.escape
    expected = section["expected_share_refused"]
    n, refused = section["n"], section["n_refused"]
    said = (f'<p><b data-count="ood_refused">{refused}</b> of {n} images refused '
            f"({section['share_refused']:.1%}) as '{e(OOD_REFUSAL)}'"
            + (f"; expected {expected:.1%} ± {section['expected_share_refused_sd']:.1%} for images like the validation "
               "split" if expected is not None else "")
            + f". Threshold {section['ood_threshold']:.4g} on <code>{OOD_OUTPUT}</code>. The headline numbers are on "
              "all images; refused images are marked <span class=tag>refused</span> below.</p>")
    rows = []
    for name, m, c, count in (("all images (headline)", headline, ci, n),
                              ("accepted only", section["metrics_accepted"], section["ci_accepted"], n - refused)):
        if not m:
            continue
        cells = "".join(f"<td>{_num(m.get(k))}{_interval(c, k)}</td>" for k in ("roc_auc", "sensitivity",
                                                                               "specificity"))
        rows.append(f"<tr><td>{e(name)}</td><td>{count}</td>{cells}</tr>")
    table = ("<table><thead><tr><th></th><th>images</th><th>ROC AUC</th><th>sensitivity</th><th>specificity</th>"
             f"</tr></thead><tbody>{''.join(rows)}</tbody></table>") if rows else ""
    return f'<section id="ood"><h2>Out of distribution</h2>{said}{table}</section>'


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "-"


def _interval(ci: Mapping[str, Any] | None, key: str) -> str:
    pair = (ci or {}).get(key)
    if not pair or any(not isinstance(v, float) or not math.isfinite(v) for v in pair):
        return ""
    return f" <span class=ci>[{pair[0]:.3f}, {pair[1]:.3f}]</span>"


def _record(metadata: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(metadata.get(OOD_KEY, "{}"))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
