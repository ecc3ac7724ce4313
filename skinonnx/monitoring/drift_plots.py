"""Monitor's drift panel. No torch.

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
