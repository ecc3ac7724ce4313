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


def write_k_class_run(run_dir: Path, classes: list[str], rows: list[tuple[str, str, list[float]]],
                      per_class: bool = True) -> Path:
    """A complete K-class CV run's cv.json and oof.csv as `train --folds` writes them (``p_<class>`` columns)."""
    run_dir.mkdir(parents=True)
    (run_dir / "cv.json").write_text(json.dumps({"classes": classes, "positive_index": None, "malignant": [0],
                                                 "folds": 5, "complete": True,
                                                 "config": {"data": str(run_dir / "nowhere")}}))
    with open(run_dir / "oof.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "group", "fold", *(f"logit_{c}" for c in classes), "probability",
                         "probability_uncalibrated", *(f"p_{c}" for c in classes if per_class)])
        for i, (path, label, probs) in enumerate(rows):
            writer.writerow([path, label, "", i % 5, *np.log(probs), f"{probs[0]:.6f}", f"{probs[0]:.6f}",
                             *(f"{p:.6f}" for p in probs if per_class)])
    return run_dir


def test_a_k_class_run_gives_cleanlab_every_class_probability(tmp_path: Path) -> None:
    classes = ["akiec", "bcc", "mel", "nv"]
    rows = [("a.png", "nv", [0.1, 0.1, 0.1, 0.7]), ("b.png", "mel", [0.05, 0.05, 0.8, 0.1]),
            ("c.png", "nv", [0.05, 0.75, 0.1, 0.1])]
    oof = read_out_of_fold(write_k_class_run(tmp_path / "k4", classes, rows))
    assert oof.classes == tuple(classes) and oof.positive_index is None
    assert oof.labels.tolist() == [3, 2, 3]
    assert np.allclose(oof.probabilities, [r[2] for r in rows])
    assert [classes[oof.suggested(i)] for i in range(3)] == ["akiec", "nv", "bcc"]  # the likeliest other class


def test_a_k_class_run_without_class_probabilities_or_with_bad_ones_is_refused(tmp_path: Path) -> None:
    rows = [("a.png", "a", [0.2, 0.3, 0.5]), ("b.png", "b", [0.2, 0.3, 0.5])]
    old = write_k_class_run(tmp_path / "old", ["a", "b", "c"], rows, per_class=False)
    with pytest.raises(AuditError, match=r"without the per-class probability columns \(p_a, p_b, p_c\)"):
        read_out_of_fold(old)
    bad = write_k_class_run(tmp_path / "bad", ["a", "b", "c"], [("a.png", "a", [0.2, 0.3, 0.6]), *rows])
    with pytest.raises(AuditError, match=r"oof\.csv:2: the class probabilities .* are not a distribution"):
        read_out_of_fold(bad)


def test_ranking_forks_no_process_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    # cleanlab's default n_jobs forks a multiprocessing.Pool from our process; with ONNX Runtime / torch threads
    # alive, a forked child can wait forever on a lock held at the fork (a test hung that way). One process only.
    import multiprocessing

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("rank_label_issues forked a multiprocessing.Pool")

    monkeypatch.setattr(multiprocessing, "Pool", no_pool)
    labels, probs, _ = constructed()
    k = 4  # K classes too: cleanlab prunes class by class, in a pool by default
    probs4 = np.random.default_rng(1).dirichlet(np.ones(k), size=len(labels))
    assert [r.index for r in rank_label_issues(labels, probs)][:3]  # two classes
    assert len(rank_label_issues(np.arange(len(labels)) % k, probs4)) == len(labels)
