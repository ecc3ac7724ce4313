"""The K-class section of `test` without a model: the summary block from one split's predictions (refused images
counted in the headline and apart in ``accepted``), the ISIC 2017 Part 3 scores under their alias names, and the
same numbers in the terminal, the card and the page."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from skinonnx.evaluation.multiclass_metrics import binary_class_names
from skinonnx.reporting.model_run import SplitPredictions
from skinonnx.reporting.multiclass_report import (
    html_section,
    model_card_lines,
    multiclass_section,
    subgroup_scorer,
    terminal_lines,
)

CLASSES = ("mel", "nv", "sk")


def _split(n: int = 90, seed: int = 4) -> SplitPredictions:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, n)
    logits = rng.normal(size=(n, 3)) + 1.5 * np.eye(3)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    decided = probs.argmax(axis=1)
    inside = rng.random(n) > 0.2
    rows = [{"path": f"{i}.jpg", "label": CLASSES[t], "in_distribution": bool(ok)}
            for i, (t, ok) in enumerate(zip(truth, inside, strict=True))]
    return SplitPredictions("test", rows, (truth == 0).astype(int), probs[:, 0], None, classes=truth,
                            probabilities=probs, decided=decided)


def test_section_scores_every_image_and_the_accepted_apart() -> None:
    split = _split()
    block = multiclass_section(split, CLASSES, (0,), bootstrap=100, seed=0, confidence=0.9)
    m = block["metrics"]
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(split.classes, split.decided))
    mel = roc_auc_score(split.classes == 0, split.probabilities[:, 0])
    sk = roc_auc_score(split.classes == 2, split.probabilities[:, 2])
    assert m["isic2017"] == pytest.approx({"melanoma_auc": mel, "seborrheic_keratosis_auc": sk,
                                           "mean_auc": (mel + sk) / 2})  # 'mel' and 'sk' are the aliases
    inside = np.array([r["in_distribution"] for r in split.rows])
    acc = block["accepted"]
    assert acc["n"] == inside.sum() and acc["n_not_assessed"] == (~inside).sum() > 0
    assert acc["metrics"]["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(split.classes[inside], split.decided[inside]))
    lo, hi = block["ci"]["balanced_accuracy"]
    assert lo <= m["balanced_accuracy"] <= hi and block["malignant_classes"] == ["mel"]

    mask = np.arange(len(split.rows)) % 3 == 0
    by_group = subgroup_scorer(split, CLASSES, bootstrap=0, seed=0, confidence=0.95)(mask)["multiclass"]
    assert by_group["balanced_accuracy"] == pytest.approx(
        balanced_accuracy_score(split.classes[mask], split.decided[mask]))
    assert by_group["balanced_accuracy_ci"] is None


def test_terminal_card_and_page_show_the_same_numbers() -> None:
    block = multiclass_section(_split(), CLASSES, (0,), bootstrap=0, seed=0, confidence=0.95)
    summary = {"multiclass": block, "positive_class": "malignant", "classes": list(CLASSES)}
    m = block["metrics"]
    text = "\n".join(terminal_lines(summary))
    assert f"balanced accuracy {m['balanced_accuracy']:.4f}" in text and "ISIC 2017 Part 3" in text
    assert f"{m['isic2017']['mean_auc']:.4f}" in text and "not assessed" in text
    card = "\n".join(model_card_lines(summary))
    assert f"| Balanced accuracy | {m['balanced_accuracy']:.3f} |" in card
    assert "| truth \\ decided | mel | nv | sk |" in card
    page = html_section(summary)
    assert page.startswith('<section id="multiclass">') and f"{m['macro_auc']:.3f}" in page
    assert binary_class_names(summary) == ("not malignant", "malignant")
    assert binary_class_names({"positive_class": "malignant", "classes": ["benign", "malignant"]}) == \
        ("benign", "malignant")
    assert terminal_lines({"positive_class": "malignant"}) == [] and html_section({}) == ""
