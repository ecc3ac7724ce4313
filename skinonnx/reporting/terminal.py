"""The `test` table on the terminal: every metric with its CI at the operating point and at 0.5, the confusion
matrix, calibration before/after and the cross-validation lines."""

from __future__ import annotations

import math
from typing import Any

from ..evaluation.metrics import METRIC_NAMES, PARTIAL_AUC_NOTE, RANK_METRICS
from ..evaluation.multiclass_metrics import binary_class_names
from ..evaluation.verdict import verdict_of
from .cv_report import terminal_lines as cv_terminal_lines
from .model_run import EvalResult
from .multiclass_report import terminal_lines as multiclass_terminal_lines
from .ood_summary import terminal_lines as ood_terminal_lines
from .safety import terminal_lines as safety_terminal_lines


def _num(value: Any) -> str:
    return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _interval(ci: dict[str, Any] | None, name: str) -> str:
    return "" if ci is None else f"[{_num(ci[name][0])}, {_num(ci[name][1])}]"


def format_metrics(result: EvalResult) -> str:
    """Every metric with its 95 % CI, at the operating point and at 0.5; confusion matrix; calibration."""
    s = result.summary
    m, ci = s["metrics"], s["ci"]
    ref = s["reference"]
    c = m["confusion"]
    boot = s["bootstrap"]
    pct = f"{boot['confidence']:.0%} CI" if boot else ""
    lines = [f"evaluated {m['n']} images of the {s['data']['split']} split ({m['n_positive']} "
             f"{s['positive_class']}) with {result.provider}",
             f"operating point: threshold {result.threshold:.4f} from {result.threshold_source}"]
    lines += multiclass_terminal_lines(s)  # K classes: the headline over the classes first
    lines += [("  " if k else "") + line for k, line in enumerate(verdict_of(s).lines())]
    if boot:
        lines.append(f"{pct}: {boot['method']}, {boot['resamples']} resamples, seed {boot['seed']}")
    width = 18 if boot else 0
    lines.append(f"  {'metric':<20} {'@' + format(result.threshold, '.4f'):>8} {pct:<{width}}  "
                 f"{'@' + format(ref['threshold'], '.4f'):>8} {pct}".rstrip())
    for name in METRIC_NAMES:
        label = name + (" *" if name in RANK_METRICS else "")
        lines.append(f"  {label:<20} {_num(m[name]):>8} {_interval(ci, name):<{width}}  "
                     f"{_num(ref['metrics'][name]):>8} {_interval(ref['ci'], name)}".rstrip())
    lines += ["  * threshold-free (same at both thresholds); " + PARTIAL_AUC_NOTE,
              f"  confusion matrix at {result.threshold:.4f} (rows = truth, cols = prediction; "
              f"{', '.join(binary_class_names(s))}):",
              f"    [[{c['tn']:>4} {c['fp']:>4}]", f"     [{c['fn']:>4} {c['tp']:>4}]]"]
    lines += _calibration_lines(s["calibration"])
    lines += cv_terminal_lines(s.get("cross_validation"))
    lines += ood_terminal_lines(s.get("ood"), m)
    lines += safety_terminal_lines(s)
    return "\n".join(lines)


def _calibration_lines(cal: dict[str, Any]) -> list[str]:
    lines = [f"  calibration (temperature {cal['temperature']:.4f} fitted on {cal.get('fitted_on', 'validation')}; "
             f"ECE over {cal['n_bins']} bins, before -> after temperature scaling):"]
    if cal.get("validation_left_out"):
        lines.append(f"    val   left out: {cal['validation_left_out']}")
    for key in ("validation", "evaluated"):
        block = cal.get(key)
        if block is None or (key == "validation" and block["split"] == cal["evaluated"]["split"]):
            continue
        if block["ece_before"] is None:
            lines.append(f"    {block['split']:<5} ECE {_num(block['ece_after'])}  Brier {_num(block['brier_after'])}"
                         " (no logits output: uncalibrated values unavailable)")
        else:
            lines.append(f"    {block['split']:<5} ECE {_num(block['ece_before'])} -> {_num(block['ece_after'])}  "
                         f"Brier {_num(block['brier_before'])} -> {_num(block['brier_after'])}")
    return lines
