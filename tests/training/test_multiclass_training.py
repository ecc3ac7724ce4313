"""Training with K classes: the malignancy group's score, threshold and calibration, the class bias, the checkpoint
and cross-validation records; two classes give the same numbers as before."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from skinonnx.evaluation.calibration import expected_calibration_error, fit_temperature
from skinonnx.evaluation.class_bias import biased_decision, log_probabilities
from skinonnx.evaluation.thresholds import choose_threshold, parse_policy
from skinonnx.softmax import softmax
from skinonnx.training.finalize import calibrate_and_choose
from skinonnx.training.imbalance import auto_class_weights
from skinonnx.training.validate import validation_metrics

from ..conftest import run_cli


def _logits(n: int, k: int, seed: int, prior: list[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=prior)
    return 2.5 * (np.eye(k)[y] * 1.5 + rng.normal(size=(n, k))), y


def test_two_classes_give_the_same_numbers_with_a_group_of_one() -> None:
    logits, y = _logits(300, 2, 0)
    old, new = calibrate_and_choose(logits, y, 1, "youden"), calibrate_and_choose(logits, y, [1], "youden")
    assert old["decision"] == new["decision"] and old["calibration"] == new["calibration"]
    assert new["malignant"] == [1] and new["class_bias"] == {"tuned_on": "none", "offsets": [0.0, 0.0]}
    assert validation_metrics(logits, y, 1) == validation_metrics(logits, y, [1])


def test_k_classes_threshold_the_summed_probability_of_the_group() -> None:
    logits, y = _logits(400, 4, 1)
    group = [1, 3]
    extra = calibrate_and_choose(logits, y, group, "sensitivity:0.9")
    t = fit_temperature(logits, y)
    assert extra["calibration"]["temperature"] == pytest.approx(t)
    score = softmax(logits, t)[:, group].sum(1)
    truth = np.isin(y, group).astype(int)
    expected = choose_threshold(parse_policy("sensitivity:0.9"), truth, score)
    assert extra["decision"]["threshold"] == expected.value
    assert extra["calibration"]["ece_after"] == pytest.approx(expected_calibration_error(truth, score))
    assert np.mean(score[truth == 1] >= extra["decision"]["threshold"]) >= 0.9
    row = validation_metrics(logits, y, group)
    from sklearn.metrics import roc_auc_score

    probs = softmax(logits)
    assert row["val_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))  # --select auc: macro AUC
    assert row["val_malignant_auc"] == pytest.approx(roc_auc_score(truth, probs[:, group].sum(1)))
    assert auto_class_weights(list(y), 4) == pytest.approx((len(y) / (4 * np.bincount(y))).tolist())


def test_class_bias_is_tuned_on_the_calibrated_log_probabilities() -> None:
    logits, y = _logits(900, 3, 2, prior=[0.8, 0.15, 0.05])
    logits = logits + 2.0 * np.log([0.8, 0.15, 0.05])  # over-confident in the common class
    extra = calibrate_and_choose(logits, y, [2], "youden", class_bias="val")
    bias, t = extra["class_bias"], extra["calibration"]["temperature"]
    assert bias["tuned_on"] == "val" and bias["on"] == "log_probabilities" and len(bias["offsets"]) == 3
    decided = biased_decision(log_probabilities(logits, t), bias["offsets"])
    from sklearn.metrics import balanced_accuracy_score

    assert bias["balanced_accuracy_after"] == pytest.approx(balanced_accuracy_score(y, decided))
    assert bias["balanced_accuracy_after"] > bias["balanced_accuracy_before"]


def _three_class_set(root: Path) -> Path:
    from skinonnx.data.synthetic import generate_dataset

    generate_dataset(root, counts={"train": 8, "val": 4, "test": 2}, size=32, seed=2, progress=False, classes=3)
    return root


TRAIN = ("--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--compile", "off",
         "--workers", "0", "--quiet")


@pytest.mark.slow
def test_a_three_class_run_records_its_group_threshold_and_class_bias(tmp_path: Path) -> None:
    data = _three_class_set(tmp_path / "data")
    out = run_cli("train", "--data", data, *TRAIN, "--name", "k3", "--runs-dir", tmp_path / "runs",
                  "--malignant", "malignant_brown", "--class-bias", "val").output
    assert "malignancy threshold" in out and "class bias (tuned on validation)" in out
    run = tmp_path / "runs" / "k3"
    state = torch.load(run / "weights" / "best.pt", weights_only=True)
    assert state["classes"] == ["benign_brown", "benign_red", "malignant_brown"]
    assert state["malignant"] == [2] and state["positive_index"] is None
    logits = state["val_predictions"]["logits"].numpy().astype(np.float64)
    labels = state["val_predictions"]["labels"].numpy()
    again = calibrate_and_choose(logits, labels, [2], "youden", class_bias="val")
    assert state["decision"] == again["decision"] and state["class_bias"] == again["class_bias"]
    assert len(state["class_bias"]["offsets"]) == 3
    with open(run / "metrics.csv") as handle:
        assert {"val_auc", "val_balanced_accuracy", "val_malignant_auc"} <= set(next(csv.DictReader(handle)))


@pytest.mark.slow
def test_three_class_cross_validation_tunes_the_class_bias_out_of_fold(tmp_path: Path) -> None:
    data = _three_class_set(tmp_path / "data")
    out = run_cli("train", "--data", data, *TRAIN, "--name", "cv3", "--runs-dir", tmp_path / "runs", "--folds", "2",
                  "--malignant", "malignant_brown,benign_red", "--class-bias", "oof").output
    assert "OOF diagnosis: balanced accuracy" in out
    cv = json.loads((tmp_path / "runs" / "cv3" / "cv.json").read_text())
    assert cv["malignant"] == [1, 2] and cv["positive_index"] is None
    oof = cv["oof"]
    assert oof["class_bias"]["tuned_on"] == "oof" and len(oof["class_bias"]["offsets"]) == 3
    assert oof["multiclass"]["metrics"]["n"] == oof["n"] == 36  # every pooled image once
    assert oof["multiclass"]["metrics"]["balanced_accuracy"] == pytest.approx(
        oof["class_bias"]["balanced_accuracy_after"])
    assert oof["n_positive"] == 24  # the group: two of three classes
