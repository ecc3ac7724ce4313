"""Report figures (matplotlib, headless Agg canvas; no pyplot state, no torch).

Each ``plot_*`` function returns PNG bytes; :func:`write_plots` writes the set for a `test`
report atomically and returns the file names it wrote.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..atomic import write_bytes
from ..deploy.decision import predicted_positive
from .metrics import PAUC_MIN_TPR, fmt
from .multiclass_metrics import binary_class_names

DPI = 110
OP_STYLE = {"marker": "*", "markersize": 16, "color": "tab:red", "markeredgecolor": "black", "linestyle": "none"}
REF_STYLE = {"marker": "o", "markersize": 8, "color": "white", "markeredgecolor": "black", "linestyle": "none"}


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _legend_below(ax) -> None:
    """Legend under the axes, so it never hides part of a curve."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False)


def _ci_text(ci: Sequence[float | None] | None) -> str:
    return "" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def plot_roc(y_true: np.ndarray, y_prob: np.ndarray, *, threshold: float, policy: str, auc: float,
             auc_ci: Sequence[float | None] | None, pauc: float, reference: float = 0.5) -> bytes:
    """ROC curve; operating point (star) and the 0.5 point (circle); shaded partial-AUC region."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y_true, y_prob, drop_intermediate=False)
    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance")
    ax.plot(fpr, tpr, color="tab:blue", linewidth=2, label=f"ROC, AUC {fmt(auc)}{_ci_text(auc_ci)}")
    ax.fill_between(fpr, PAUC_MIN_TPR, np.maximum(tpr, PAUC_MIN_TPR), color="tab:blue", alpha=0.15,
                    label=f"partial AUC above {PAUC_MIN_TPR:.0%} sensitivity: {fmt(pauc)}")
    ax.axhline(PAUC_MIN_TPR, color="tab:blue", linewidth=0.8, linestyle="--", alpha=0.6)
    for t, style, name in ((threshold, OP_STYLE, f"operating point ({policy})"), (reference, REF_STYLE, "")):
        pred = predicted_positive(y_prob, t)
        sens = float(np.mean(pred[y_true == 1])) if np.any(y_true == 1) else math.nan
        spec = float(np.mean(~pred[y_true == 0])) if np.any(y_true == 0) else math.nan
        label = f"{name or 'threshold'} {t:.3f}: sens {fmt(sens)}, spec {fmt(spec)}"
        ax.plot([1 - spec], [sens], label=label, zorder=5, **style)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="1 − specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", title=f"ROC curve (n = {len(y_true)})", aspect="equal")
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _png(fig)


def plot_pr(y_true: np.ndarray, y_prob: np.ndarray, *, threshold: float, ap: float,
            ap_ci: Sequence[float | None] | None, reference: float = 0.5) -> bytes:
    """Precision-recall curve with prevalence baseline, operating point and the 0.5 point."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, y_prob)
    prevalence = float(np.mean(y_true))
    fig = Figure(figsize=(6.2, 5.6))
    ax = fig.add_subplot()
    ax.axhline(prevalence, color="0.6", linestyle=":", label=f"prevalence {prevalence:.3f} (no skill)")
    ax.step(recall, precision, where="post", color="tab:green", linewidth=2,
            label=f"PR curve, average precision {fmt(ap)}{_ci_text(ap_ci)}")
    for t, style, name in ((threshold, OP_STYLE, "operating point"), (reference, REF_STYLE, "threshold")):
        pred = predicted_positive(y_prob, t)
        rec = float(np.mean(pred[y_true == 1])) if np.any(y_true == 1) else math.nan
        prec = float(np.mean(y_true[pred] == 1)) if np.any(pred) else math.nan
        ax.plot([rec], [prec], label=f"{name} {t:.3f}: recall {fmt(rec)}, precision {fmt(prec)}", zorder=5,
                **style)
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="recall (sensitivity)", ylabel="precision (PPV)",
           title=f"Precision-recall curve (n = {len(y_true)})", aspect="equal")
    ax.grid(alpha=0.3)
    _legend_below(ax)
    return _png(fig)


def plot_confusion(matrices: Sequence[tuple[str, list[list[int]]]], classes: Sequence[str]) -> bytes:
    """One panel per (title, K x K counts, rows = truth; for two classes [[tn, fp], [fn, tp]]): counts and row
    percentages, colour = row fraction (the diagonal: each class's sensitivity)."""
    k = len(classes)
    side = 4.6 if k == 2 else 1.2 + 0.75 * k
    fig = Figure(figsize=(side * len(matrices), side - 0.2))
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    for ax, (title, matrix) in zip(axes, matrices, strict=True):
        counts = np.asarray(matrix, dtype=float)
        rows = counts.sum(axis=1, keepdims=True)
        frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(k):
            for j in range(k):
                text = f"{int(counts[i, j])}\n({frac[i, j]:.0%} of row)" if k == 2 else \
                    f"{int(counts[i, j])}\n{frac[i, j]:.0%}"
                ax.text(j, i, text, ha="center", va="center", fontsize=12 if k == 2 else 8,
                        color="white" if frac[i, j] > 0.6 else "black")
        sep = "\n" if k == 2 else " "
        ax.set_xticks(range(k), [f"predicted{sep}{c}" for c in classes], rotation=0 if k == 2 else 45,
                      ha="center" if k == 2 else "right")
        ax.set_yticks(range(k), [f"true{sep}{c}" for c in classes])
        ax.set_title(title, fontsize=10)
    what = "specificity / sensitivity" if k == 2 else "each class's sensitivity (recall)"
    fig.suptitle(f"Confusion matrix (rows: truth; row % = {what} on the diagonal)", fontsize=10)
    return _png(fig)


def plot_reliability(panels: Sequence[tuple[str, dict[str, Any]]], temperature: float) -> bytes:
    """One column per (title, calibration block): reliability curve before/after and bin counts."""
    fig = Figure(figsize=(5.2 * len(panels), 6.4))
    grid = fig.add_gridspec(2, len(panels), height_ratios=(3, 1), hspace=0.08)
    for k, (title, block) in enumerate(panels):
        ax = fig.add_subplot(grid[0, k])
        hist = fig.add_subplot(grid[1, k], sharex=ax)
        ax.plot([0.5, 1], [0.5, 1], color="0.6", linestyle=":", label="perfect calibration")
        edges = np.asarray((block.get("reliability_after") or block["reliability_before"])["bin_edges"])
        centers = (edges[:-1] + edges[1:]) / 2
        width = (edges[1] - edges[0]) * 0.4
        for tag, color, offset, name in (("before", "tab:orange", -width / 2, "before (T = 1)"),
                                         ("after", "tab:blue", width / 2, f"after (T = {temperature:.3f})")):
            curve = block.get(f"reliability_{tag}")
            if curve is None:
                continue
            conf = np.asarray(curve["confidence"], dtype=float)
            acc = np.asarray(curve["accuracy"], dtype=float)
            count = np.asarray(curve["count"])
            ok = count > 0
            ax.plot(conf[ok], acc[ok], color=color, linestyle="--" if tag == "before" else "-", linewidth=1.2,
                    label=f"{name}: ECE {fmt(block[f'ece_{tag}'])}, Brier {fmt(block[f'brier_{tag}'])}")
            # marker area in proportion to the bin's images: a bin of one image should not look like one of 100
            ax.scatter(conf[ok], acc[ok], s=12 + 400 * count[ok] / max(1, block["n"]), color=color,
                       edgecolor="black", linewidth=0.5, zorder=3)
            hist.bar(centers + offset, count, width=width, color=color, alpha=0.8)
        ax.set(xlim=(0.48, 1.02), ylim=(-0.02, 1.02), ylabel="accuracy of the predicted class",
               title=f"{title} (n = {block['n']})")
        ax.tick_params(labelbottom=False)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
        hist.set(xlabel="confidence of the predicted class", ylabel="images")
        hist.grid(alpha=0.3)
    fig.suptitle("Reliability diagram (10 equal-width confidence bins; marker area ∝ images in the bin)",
                 fontsize=11)
    return _png(fig)


def training_curves_figure(history: Sequence[dict[str, float]], best_epoch: float | None = None) -> Figure:
    """Loss (train/val), validation AUC and accuracy, learning rate, per epoch from metrics.csv.

    Whole-epoch ticks only; legends sit under the axes, never over a curve.
    """
    from matplotlib.ticker import MaxNLocator

    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)], dtype=float)

    def column(name: str) -> np.ndarray | None:
        values = np.array([row.get(name, math.nan) for row in history], dtype=float)
        return None if np.all(np.isnan(values)) else values

    fig = Figure(figsize=(14, 4.6))
    ax_loss, ax_auc, ax_lr = fig.subplots(1, 3)
    for ax, series, title in (
        (ax_loss, (("train_loss", "train loss", "tab:blue"), ("val_loss", "validation loss", "tab:orange")),
         "Loss (cross-entropy)"),
        (ax_auc, (("val_auc", "validation ROC AUC", "tab:green"), ("val_acc", "validation accuracy", "tab:purple"),
                  ("train_acc", "train accuracy", "tab:gray")), "Validation AUC and accuracy"),
        (ax_lr, (("lr", "learning rate", "tab:red"),), "Learning rate"),
    ):
        for key, label, color in series:
            values = column(key)
            if values is not None:
                ax.plot(epochs, values, marker="o", markersize=3, color=color, label=label)
        if best_epoch is not None and not math.isnan(best_epoch):
            ax.axvline(best_epoch, color="black", linestyle=":", linewidth=1, label=f"best epoch {int(best_epoch)}")
        ax.set(xlabel="epoch", title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False, ncol=2)
    lr = column("lr")
    if lr is not None and np.all(lr > 0):
        ax_lr.set_yscale("log")
    ax_auc.set_ylim(-0.02, 1.02)
    return fig


def plot_training_curves(history: Sequence[dict[str, float]], best_epoch: float | None = None) -> bytes:
    return _png(training_curves_figure(history, best_epoch))


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


def write_plots(summary: dict[str, Any], y_true: np.ndarray, y_prob: np.ndarray, out: Path, *,
                history: Sequence[dict[str, float]] | None = None) -> list[str]:
    """Write every figure the data allow into ``out``; return the file names, in a fixed order.

    Plain data in: the report's ``summary`` dict, the evaluated split's labels (1 = positive) and
    calibrated positive probabilities, and the training history (rows of metrics.csv), if any.
    """
    s = summary
    threshold = float(s["threshold"])
    y, p = np.asarray(y_true), np.asarray(y_prob)
    m, ci, ref = s["metrics"], s["ci"] or {}, s["reference"]
    policy = s["threshold_source"].removeprefix("model metadata (").removesuffix(")")
    written: list[str] = []

    def save(name: str, png: bytes) -> None:
        write_bytes(out / name, png)
        written.append(name)

    if 0 < y.sum() < len(y):
        save("roc_curve.png", plot_roc(y, p, threshold=threshold, policy=policy, auc=m["roc_auc"],
                                       auc_ci=ci.get("roc_auc"), pauc=m["pauc_80"], reference=ref["threshold"]))
    if y.sum() > 0:
        save("pr_curve.png", plot_pr(y, p, threshold=threshold, ap=m["average_precision"],
                                     ap_ci=ci.get("average_precision"), reference=ref["threshold"]))
    ordered = list(binary_class_names(s))  # (negative, positive); K classes: the malignancy group
    matrices = [(f"operating point: threshold {threshold:.4f}", _matrix(m["confusion"])),
                (f"reference: threshold {ref['threshold']:.4f}", _matrix(ref["metrics"]["confusion"]))]
    save("confusion_matrix.png", plot_confusion(matrices, ordered))
    cal = s["calibration"]
    val = cal["validation"]
    panels = [(f"validation split ({val['split']})", val)] if val and val["split"] != cal["evaluated"]["split"] else []
    panels.append((f"evaluated split ({cal['evaluated']['split']})", cal["evaluated"]))
    save("reliability_diagram.png", plot_reliability(panels, cal["temperature"]))
    if history:
        save("training_curves.png", plot_training_curves(history, s["training"]["best_epoch"]))
    return written


def _matrix(c: dict[str, int]) -> list[list[int]]:
    return [[c["tn"], c["fp"]], [c["fn"], c["tp"]]]
