"""Class imbalance: the loss weights and the balanced sampler exactly, then one training run on a 1:4 set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from skinonnx.training.imbalance import auto_class_weights, balanced_sampler

from ..conftest import run_cli


def test_auto_weights_are_scikit_learns_balanced_weights() -> None:
    labels = [0] * 40 + [1] * 10
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=np.array(labels))
    assert auto_class_weights(labels, 2) == pytest.approx(expected.tolist())
    # each class then carries the same total weight in the loss
    weights = auto_class_weights(labels, 2)
    assert 40 * weights[0] == pytest.approx(10 * weights[1])


def test_balanced_sampler_draws_both_classes_equally_often_and_is_seeded() -> None:
    labels = [0] * 90 + [1] * 10
    drawn = [labels[i] for _ in range(20) for i in balanced_sampler(labels, seed=0)]  # 2000 draws
    share = Counter(drawn)[1] / len(drawn)
    assert abs(share - 0.5) < 0.05  # binomial sd 0.011; the plain shuffle gives exactly 0.10
    assert len(list(balanced_sampler(labels, seed=0))) == len(labels)  # an epoch keeps its length
    assert list(balanced_sampler(labels, seed=1)) == list(balanced_sampler(labels, seed=1))


def _imbalanced_set(root: Path) -> Path:
    from skinonnx.data.synthetic import generate_dataset

    generate_dataset(root, counts={"train": 24, "val": 12, "test": 1}, size=48, seed=5, progress=False)
    for split, keep in (("train", 6), ("val", 6)):  # malignant becomes 6 of 30 in train (20 %)
        for path in sorted((root / split / "malignant").glob("*.png"))[keep:]:
            path.unlink()
    return root


def _minority_recall_at_argmax(best: Path) -> float:
    state = torch.load(best, weights_only=True)
    logits, labels = state["val_predictions"]["logits"], state["val_predictions"]["labels"]
    malignant = labels == 1
    return float((logits[malignant].argmax(1) == 1).float().mean())


@pytest.mark.slow
def test_class_weights_raise_minority_recall_on_an_imbalanced_set(tmp_path: Path) -> None:
    data = _imbalanced_set(tmp_path / "data")
    recall = {}
    for name, option in (("plain", ()), ("weighted", ("--class-weights", "auto")),
                         ("sampled", ("--sampler", "balanced"))):
        out = run_cli("train", "--data", data, "--weights", "none", "--epochs", "3", "--batch-size", "8",
                      "--image-size", "32", "--lr", "1e-3", "--early-stop", "0", "--name", name,
                      "--runs-dir", tmp_path / "runs", "--quiet", *option).output
        run = tmp_path / "runs" / name
        recall[name] = _minority_recall_at_argmax(run / "weights" / "best.pt")
        config = json.loads((run / "config.json").read_text())
        assert (config["class_weights"], config["sampler"]) == {
            "plain": ("none", "shuffle"), "weighted": ("auto", "shuffle"), "sampled": ("none", "balanced")}[name]
        if name == "weighted":
            assert config["class_loss_weights"] == pytest.approx([30 / (2 * 24), 30 / (2 * 6)])
            assert "class imbalance: loss weights benign 0.625, malignant 2.500" in out
    print(recall)
    assert recall["weighted"] > recall["plain"], recall
    assert recall["sampled"] > recall["plain"], recall
