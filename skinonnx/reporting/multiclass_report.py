"""The K-class section of `test` (no torch): summary.json's ``multiclass`` block, its terminal lines, model-card
lines, report.html section and confusion figure.

The diagnosis scored is the graph's own ``label`` output (the file decides; ``argmax(log p + class_bias)``), the
probabilities are the graph's calibrated ``probabilities``. The malignancy group is scored by the binary path
(``p_malignant`` against the true group, at the file's threshold): those are summary.json's ``metrics``.
Refused images ("not assessed") stay in the headline as in the binary report; ``accepted`` adds the scores on
the images the model answers.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_bytes
from ..evaluation.metrics import fmt
from ..evaluation.multiclass_metrics import PER_CLASS, evaluate_multiclass, multiclass_bootstrap_ci, multiclass_metrics
from .model_run import SplitPredictions

CONFUSION_PNG = "multiclass_confusion.png"
FIGURE_TITLE = "Confusion matrix of the K classes (the file's label output; counts and row %)"
HEADLINE = "balanced_accuracy"
DECISION = "the graph's label output: argmax(log probabilities + class_bias)"
ISIC2017_LABELS = {"melanoma_auc": "melanoma AUC", "seborrheic_keratosis_auc": "seborrheic keratosis AUC",
                   "mean_auc": "their mean (the Part 3 score)"}


def multiclass_section(evaluated: SplitPredictions, classes: Sequence[str], group: Sequence[int], *,
                       bootstrap: int, seed: int, confidence: float) -> dict[str, Any]:
    """summary.json's ``multiclass`` block: every K-class metric with its bootstrap interval (``ci`` None with
    ``bootstrap`` 0), the malignancy group's classes, and the scores on the accepted images where some were
    refused."""
    assert evaluated.classes is not None and evaluated.probabilities is not None and evaluated.decided is not None
    result = evaluate_multiclass(evaluated.classes, evaluated.probabilities, evaluated.decided, classes,
                                 bootstrap=bootstrap, seed=seed, confidence=confidence)
    inside = np.array([r.get("in_distribution") is not False for r in evaluated.rows])
    accepted = None
    if any("in_distribution" in r for r in evaluated.rows):
        accepted = {"n": int(inside.sum()), "n_not_assessed": int((~inside).sum()),
                    "metrics": multiclass_metrics(evaluated.classes[inside], evaluated.probabilities[inside],
                                                  evaluated.decided[inside], classes) if inside.any() else None}
    return {"headline": HEADLINE, "decision": DECISION, "malignant_classes": [classes[i] for i in group],
            "metrics": result["metrics"], "ci": result["ci"], "accepted": accepted}


def subgroup_scorer(evaluated: SplitPredictions, classes: Sequence[str], *, bootstrap: int, seed: int,
                    confidence: float) -> Callable[[np.ndarray], dict[str, Any]]:
    """For `test --by`: a group's (boolean mask's) balanced accuracy over the classes with its interval, added to
    its subgroup row as ``multiclass`` (the row's own metrics are the malignancy group's)."""
    assert evaluated.classes is not None and evaluated.probabilities is not None and evaluated.decided is not None
    truth, probs, decided = evaluated.classes, evaluated.probabilities, evaluated.decided

    def score(mask: np.ndarray) -> dict[str, Any]:
        value = multiclass_metrics(truth[mask], probs[mask], decided[mask], classes)[HEADLINE]
        ci = multiclass_bootstrap_ci(truth[mask], probs[mask], decided[mask], classes, n_resamples=bootstrap,
                                     seed=seed, confidence=confidence)[HEADLINE] if bootstrap else None
        return {"multiclass": {HEADLINE: value, f"{HEADLINE}_ci": ci}}

    return score


def write_files(out_dir: Path, summary: Mapping[str, Any], *, plots: bool = True) -> list[str]:
    """multiclass_confusion.png (with plots); returns the names written."""
    block = summary.get("multiclass")
    if not plots or not block:
        return []
    from ..evaluation.plots import plot_confusion

    m = block["metrics"]
    write_bytes(out_dir / CONFUSION_PNG, plot_confusion([("decided label (the file's own)", m["confusion"])],
                                                        m["classes"]))
    return [CONFUSION_PNG]


def _ci(ci: Sequence[float] | None, digits: int = 4) -> str:
    return "" if ci is None else f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def _get(ci: Mapping[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if ci is None:
            return None
        ci = ci.get(key)
    return ci


def _pct(value: float | None) -> str:
    return "  n/a" if value is None or math.isnan(value) else f"{value:5.0%}"


def terminal_lines(summary: Mapping[str, Any]) -> list[str]:
    """The K-class lines, headline first; nothing for two classes."""
    block = summary.get("multiclass")
    if not block:
        return []
    m, ci = block["metrics"], block["ci"]
    classes = m["classes"]
    out = [f"{len(classes)} classes, diagnosis = {block['decision']}",
           f"  balanced accuracy {fmt(m['balanced_accuracy'], 4)} {_ci(_get(ci, 'balanced_accuracy'))}  (headline)",
           f"  accuracy          {fmt(m['accuracy'], 4)} {_ci(_get(ci, 'accuracy'))}",
           f"  macro AUC (OvR)   {fmt(m['macro_auc'], 4)} {_ci(_get(ci, 'macro_auc'))}",
           f"  {'class':<22} {'n':>5}  " + "  ".join(f"{name:<24}" for name in PER_CLASS).rstrip()]
    for name in classes:
        row = m["per_class"][name]
        cells = "  ".join(f"{fmt(row[k], 4)} {_ci(_get(ci, 'per_class', name, k)):<17}" for k in PER_CLASS)
        out.append(f"  {name[:22]:<22} {row['n']:>5}  {cells.rstrip()}")
    if "isic2017" in m:
        out.append("  ISIC 2017 Part 3: " + ", ".join(
            f"{label} {fmt(m['isic2017'][k], 4)} {_ci(_get(ci, 'isic2017', k))}".rstrip()
            for k, label in ISIC2017_LABELS.items()))
    width = max(len(c) for c in classes[:12])
    out.append("  confusion matrix (rows = truth, cols = decided label; count, row %):")
    out.append("    " + " " * width + "".join(f" {c[:16]:>17}" for c in classes))
    for name, counts, frac in zip(classes, m["confusion"], m["confusion_normalised"], strict=True):
        cells = "".join(f" {n:>9} ({_pct(None if frac is None else frac[j])})" for j, n in enumerate(counts))
        out.append(f"    {name:<{width}}{cells}")
    acc = block.get("accepted")
    if acc and acc["n_not_assessed"] and acc["metrics"]:
        out.append(f"  on the {acc['n']} accepted images ({acc['n_not_assessed']} not assessed): balanced accuracy "
                   f"{fmt(acc['metrics']['balanced_accuracy'], 4)}, macro AUC {fmt(acc['metrics']['macro_auc'], 4)}")
    out.append(f"malignancy group ({' + '.join(block['malignant_classes'])}): p_malignant against the true group, "
               "the binary metrics below")
    return out


def model_card_lines(summary: Mapping[str, Any]) -> list[str]:
    """The card's K-class section (before the malignancy group's performance)."""
    block = summary.get("multiclass")
    if not block:
        return []
    m, ci = block["metrics"], block["ci"]
    classes = m["classes"]
    out = ["## Performance over the classes", "",
           f"{len(classes)} classes; the diagnosis is {block['decision']}. Headline: balanced accuracy (the mean of "
           "the per-class sensitivities, ISIC 2018/2019's score).", "",
           "| Metric | Value | CI |", "|---|---|---|",
           *(f"| {label} | {fmt(m[k])} | {_ci(_get(ci, k), 3)} |" for k, label in
             (("balanced_accuracy", "Balanced accuracy"), ("accuracy", "Accuracy"),
              ("macro_auc", "Macro AUC (one-vs-rest)"))),
           *(f"| ISIC 2017 Part 3: {label} | {fmt(m['isic2017'][k])} | {_ci(_get(ci, 'isic2017', k), 3)} |"
             for k, label in ISIC2017_LABELS.items() if "isic2017" in m), "",
           "| Class | n | AUC (one-vs-rest) | Sensitivity | Specificity |", "|---|---|---|---|---|"]
    for name in classes:
        row = m["per_class"][name]
        out.append(f"| {name} | {row['n']} | " + " | ".join(
            f"{fmt(row[k])} {_ci(_get(ci, 'per_class', name, k), 3)}".rstrip() for k in PER_CLASS) + " |")
    out += ["", "Confusion matrix (rows = truth, columns = decided label):", "",
            "| truth \\ decided | " + " | ".join(classes) + " |", "|---" * (len(classes) + 1) + "|",
            *(f"| {name} | " + " | ".join(str(n) for n in counts) + " |"
              for name, counts in zip(classes, m["confusion"], strict=True)),
            "", f"The malignancy group ({', '.join(block['malignant_classes'])}) is scored below as a two-class "
            "task: `p_malignant` (the group's summed probability) against the true group, at the file's threshold.",
            ""]
    return out


def html_section(summary: Mapping[str, Any]) -> str:
    """report.html's K-class section: headline tiles, per-class table, ISIC 2017 scores, the confusion matrix
    (its figure is among the page's figures)."""
    block = summary.get("multiclass")
    if not block:
        return ""
    e = html.escape
    m, ci = block["metrics"], block["ci"]
    classes = m["classes"]

    def cell(value: Any, interval: Sequence[float] | None) -> str:
        return f"{fmt(value)}" + (f" <span class=ci>{e(_ci(interval, 3))}</span>" if interval else "")

    tiles = [("Balanced accuracy", cell(m["balanced_accuracy"], _get(ci, "balanced_accuracy")), "headline"),
             ("Macro AUC", cell(m["macro_auc"], _get(ci, "macro_auc")), "one-vs-rest"),
             ("Accuracy", cell(m["accuracy"], _get(ci, "accuracy")), f"{m['n']} images")]
    if "isic2017" in m:
        tiles += [(f"ISIC 2017: {label}", cell(m["isic2017"][k], _get(ci, "isic2017", k)), "Part 3")
                  for k, label in ISIC2017_LABELS.items()]
    rows = "".join(f"<tr><td>{e(name)}</td><td>{m['per_class'][name]['n']}</td>" + "".join(
        f"<td>{cell(m['per_class'][name][k], _get(ci, 'per_class', name, k))}</td>" for k in PER_CLASS) + "</tr>"
                   for name in classes)
    confusion = "".join(f"<tr><th>{e(name)}</th>" + "".join(
        f"<td>{n}<br><span class=muted>{_pct(None if frac is None else frac[j]).strip()}</span></td>"
        for j, n in enumerate(counts)) + "</tr>"
                        for name, counts, frac in zip(classes, m["confusion"], m["confusion_normalised"],
                                                      strict=True))
    tiles_html = "".join(f'<div class="tile">{e(t)}<b>{v}</b><span class=muted>{note}</span></div>'
                         for t, v, note in tiles)
    header = "".join(f"<th>{e(c)}</th>" for c in classes)
    return ('<section id="multiclass"><h2>Over the classes</h2>'
            f'<p class="muted">{len(classes)} classes; the diagnosis is {e(block["decision"])}. The malignancy group '
            f"({e(', '.join(block['malignant_classes']))}) is scored below as a two-class task.</p>"
            f'<div class="head">{tiles_html}</div>'
            "<table><tr><th>class</th><th>n</th><th>AUC (OvR)</th><th>sensitivity</th><th>specificity</th></tr>"
            f"{rows}</table><h3>Confusion matrix (rows = truth, columns = decided label)</h3>"
            f"<table><tr><th></th>{header}</tr>{confusion}</table>"
            f'<p class="muted">Its figure: {CONFUSION_PNG}, under Figures.</p></section>')
