"""Figures of the safety sections: monitor's drift panel and the `test` report's risk-coverage curve. No torch.

Plain data in, PNG bytes out (matplotlib's Agg canvas, no pyplot state), like evaluation/plots.py.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 110


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def plot_drift(reference: Mapping[str, np.ndarray], new: Mapping[str, np.ndarray], verdict: dict[str, Any]) -> bytes:
    """One empirical-CDF panel per compared quantity (reference vs new), titled with its test result."""
    names = list(verdict["quantities"])
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows + 0.6))
    word = "DRIFT" if verdict["drift"] else "no drift detected"
    fig.suptitle(f"{word}: p = {verdict['p_value']:.3g} ({verdict['method']}, alpha {verdict['alpha']}); "
                 f"{verdict['n_new']} new vs {verdict['n_reference']} reference images",
                 color="tab:red" if verdict["drift"] else "black")
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        for values, label, colour in ((reference[name], "reference (test)", "tab:blue"),
                                      (new[name], "new batch", "tab:orange")):
            x = np.sort(np.asarray(values, dtype=float))
            ax.step(x, np.arange(1, x.size + 1) / x.size, where="post", color=colour, label=label)
        q = verdict["quantities"][name]
        title = name if "p_adjusted" not in q else f"{name}: adj. p {q['p_adjusted']:.2g}"
        ax.set_title(title, fontsize=9, color="tab:red" if q.get("drift") else "black")
        ax.set_ylabel("share of images ≤ x", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return _png(fig)


def plot_risk_coverage(selective: dict[str, Any]) -> bytes:
    """Risk-coverage curve per ranking, with the random-abstention and oracle references and the deployed point."""
    fig = Figure(figsize=(6.2, 4.8))
    ax = fig.add_subplot()
    colours = {"threshold_distance": "tab:blue", "ood_score": "tab:green"}
    names = {"threshold_distance": "by |p - threshold|", "ood_score": "by ood_score"}
    random_aurc = None
    for key, curve in selective["curves"].items():
        ax.plot(curve["coverage"], curve["risk"], color=colours.get(key, "tab:purple"), linewidth=2,
                label=f"{names.get(key, key)}: AURC {curve['aurc']:.3f} (E-AURC {curve['e_aurc']:.3f})")
        random_aurc = curve["random_aurc"]
    if random_aurc is not None:
        ax.axhline(random_aurc, color="0.5", linestyle=":", label=f"random abstention: AURC {random_aurc:.3f}")
    deployed = selective["deployed"]
    if deployed.get("error_rate") is not None and not math.isnan(deployed["error_rate"]):
        ax.plot([deployed["coverage"]], [deployed["error_rate"]], marker="*", markersize=14, color="tab:red",
                markeredgecolor="black", linestyle="none", label=f"deployed ({deployed['rule']})")
    ax.set_xlabel("coverage (share of images answered)")
    ax.set_ylabel("risk (error rate among answered)")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False)
    return _png(fig)
