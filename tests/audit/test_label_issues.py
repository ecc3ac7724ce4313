"""cleanlab's ranking on constructed out-of-fold probabilities, and reading a CV run's oof.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from skinonnx.audit.label_issues import AuditError, rank_label_issues, read_out_of_fold


def constructed(n: int = 200, flipped: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray, set[int]]:
    """A good but imperfect model's out-of-fold probabilities, and labels of which ``flipped`` were flipped."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    p_true = rng.beta(8, 2, n)  # probability of the true class: mostly high, sometimes wrong
    probs = np.where(truth[:, None] == np.arange(2)[None, :], p_true[:, None], 1 - p_true[:, None])
    wrong = set(int(i) for i in rng.choice(n, flipped, replace=False))
    labels = truth.copy()
    labels[list(wrong)] = 1 - labels[list(wrong)]
    return labels, probs, wrong


def test_flipped_labels_rank_first() -> None:
    labels, probs, wrong = constructed()
    ranked = rank_label_issues(labels, probs)
    assert sorted(r.index for r in ranked) == list(range(len(labels)))
    top = {r.index for r in ranked[:len(wrong)]}
    assert len(top & wrong) >= 8  # the model is wrong on ~1 in 20 true labels: a few clean ones may outrank
    flagged = {r.index for r in ranked if r.flagged}
    assert flagged and flagged <= wrong  # confident learning flags few here, but only flipped ones
    assert [r.index for r in ranked[:len(flagged)]] == [r.index for r in ranked if r.flagged]  # flagged first
    qualities = [r.quality for r in ranked if r.flagged]
    assert qualities == sorted(qualities)


def test_a_random_model_ranks_no_better_than_chance() -> None:
    """The measurement can fail: uninformative probabilities put about k * 5 % flipped labels in the top k."""
    labels, _, wrong = constructed(n=400, flipped=20, seed=1)
    noise = np.random.default_rng(2).uniform(0.3, 0.7, len(labels))
    ranked = rank_label_issues(labels, np.stack([1 - noise, noise], axis=1))
    assert len({r.index for r in ranked[:20]} & wrong) <= 6


def write_cv_run(run_dir: Path, rows: list[tuple[str, str, float]], complete: bool = True) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "cv.json").write_text(json.dumps({"classes": ["benign", "malignant"], "positive_index": 1,
                                                 "folds": 5, "complete": complete,
                                                 "config": {"data": str(run_dir / "nowhere")}}))
    with open(run_dir / "oof.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "fold", "logit_benign", "logit_malignant", "probability",
                         "probability_uncalibrated"])
        for i, (path, label, p) in enumerate(rows):
            writer.writerow([path, label, "", i % 5, 0.0, 0.0, f"{p:.6f}", f"{p:.6f}"])
    return run_dir


def test_read_out_of_fold(tmp_path: Path) -> None:
    run = write_cv_run(tmp_path / "cv", [("train/benign/a.png", "benign", 0.1), ("train/malignant/b.png",
                                                                                  "malignant", 0.8)])
    oof = read_out_of_fold(run)
    assert oof.paths == ["train/benign/a.png", "train/malignant/b.png"]
    assert oof.labels.tolist() == [0, 1]
    assert np.allclose(oof.probabilities, [[0.9, 0.1], [0.2, 0.8]])


def test_bad_runs_are_refused_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "single").mkdir()
    with pytest.raises(AuditError, match="not a cross-validation run"):
        read_out_of_fold(tmp_path / "single")
    run = write_cv_run(tmp_path / "partial", [("a.png", "benign", 0.1)], complete=False)
    with pytest.raises(AuditError, match="not complete"):
        read_out_of_fold(run)
    run = write_cv_run(tmp_path / "odd", [("a.png", "benign", 0.1), ("b.png", "melanoma", 0.9)])
    with pytest.raises(AuditError, match=r"oof\.csv:3: label 'melanoma'"):
        read_out_of_fold(run)


def test_a_k_class_run_is_named_as_such(tmp_path: Path) -> None:
    import json

    run = write_cv_run(tmp_path / "k3", [("a.png", "benign", 0.1)])
    cv = json.loads((run / "cv.json").read_text())
    (run / "cv.json").write_text(json.dumps({**cv, "classes": ["a", "b", "c"], "positive_index": None}))
    with pytest.raises(AuditError, match=r"a run of 3 classes \['a', 'b', 'c'\]; label issues take two-class runs"):
        read_out_of_fold(run)
