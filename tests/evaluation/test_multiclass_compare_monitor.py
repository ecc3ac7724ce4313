"""`compare` and `monitor` on K-class files: the paired balanced-accuracy difference, the class-distribution drift test
joined to the batch's family of tests, and both commands on a trained 3-class model against scikit-learn / SciPy."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2_contingency
from sklearn.metrics import balanced_accuracy_score

from skinonnx.evaluation.multiclass_metrics import paired_balanced_accuracy_difference
from skinonnx.monitoring.drift import class_distribution_test, drift_test, holm, with_class_distribution

from ..conftest import MulticlassModel, run_cli
from .test_multiclass_report import predict_csv, sklearn_scores


def test_paired_balanced_accuracy_difference_equals_scikit_learn_and_is_deterministic() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, 80)
    a = np.where(rng.random(80) < 0.6, truth, rng.integers(0, 4, 80))
    b = np.where(rng.random(80) < 0.3, truth, rng.integers(0, 4, 80))
    diff, ci = paired_balanced_accuracy_difference(truth, a, b, 4, resamples=300, seed=1)
    assert diff == pytest.approx(balanced_accuracy_score(truth, a) - balanced_accuracy_score(truth, b), abs=1e-12)
    assert ci is not None and ci[0] < diff < ci[1]
    assert paired_balanced_accuracy_difference(truth, a, b, 4, resamples=300, seed=1) == (diff, ci)
    assert paired_balanced_accuracy_difference(truth, a, a, 4, resamples=50) == (0.0, [0.0, 0.0])
    assert paired_balanced_accuracy_difference(truth, a, b, 4, resamples=0)[1] is None


def test_class_distribution_test_is_scipys_chi_square_and_joins_the_holm_family() -> None:
    classes = ["a", "b", "c", "never"]
    reference = ["a"] * 30 + ["b"] * 20 + ["c"] * 10
    new = ["a"] * 10 + ["b"] * 20 + ["c"] * 30
    test = class_distribution_test(reference, new, classes)
    expected = chi2_contingency(np.array([[30, 20, 10], [10, 20, 30]]), correction=False)  # "never": left out
    assert test["p_value"] == pytest.approx(expected.pvalue) and test["dof"] == 2
    assert test["reference_counts"] == [30, 20, 10, 0] and test["new_counts"] == [10, 20, 30, 0]
    assert class_distribution_test(["a"] * 5, ["a"] * 5, classes)["p_value"] == 1.0  # one class decided: no test

    rng = np.random.default_rng(0)
    same = {"probability": rng.random(60)}, {"probability": rng.random(60)}
    ks = drift_test(*same, method="ks")
    joined = with_class_distribution(ks, test)
    family = holm([ks["quantities"]["probability"]["p_value"], test["p_value"]])
    assert joined["class_distribution"]["p_adjusted"] == pytest.approx(family[1])
    assert joined["quantities"]["probability"]["p_adjusted"] == pytest.approx(family[0])
    assert joined["drift"] and joined["class_distribution"]["drift"]
    assert joined["p_value"] == pytest.approx(family.min())
    mmd = with_class_distribution(drift_test(*same, method="mmd"), class_distribution_test(reference, reference,
                                                                                           classes))
    assert not mmd["drift"] and not mmd["class_distribution"]["drift"]


@pytest.mark.slow
def test_compare_two_k_class_files(multiclass_model: MulticlassModel, tmp_path: Path) -> None:
    m = multiclass_model
    copy = tmp_path / "copy.onnx"
    shutil.copyfile(m.onnx, copy)
    shown = run_cli("compare", m.onnx, copy, "--data", m.data, "--output", tmp_path / "cmp", "--bootstrap", "50",
                    "--speed-seconds", "0.1", "--quiet")
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    rows = predict_csv(m.onnx, m.data / "test", tmp_path / "p.csv")
    classes = ["benign_brown", "benign_red", "malignant_brown"]
    want = sklearn_scores(rows, classes)
    first, second = (model["multiclass"] for model in doc["models"])
    assert first["balanced_accuracy"] == pytest.approx(want["balanced_accuracy"], abs=1e-12)
    assert first["macro_auc"] == pytest.approx(np.mean(list(want["auc"].values())), abs=1e-12)
    assert first["malignant_classes"] == ["benign_red", "malignant_brown"]
    assert first["vs_best"] is None and second["vs_best"]["difference"] == 0.0  # the same bytes: no difference
    assert second["vs_best"]["ci"] == [0.0, 0.0] and second["vs_best"]["images"] == 9
    assert "balanced acc. [CI]" in shown.output and "Δbal. acc." in (tmp_path / "cmp" / "compare.md").read_text()


@pytest.mark.slow
def test_monitor_a_k_class_file_tests_the_decided_classes_and_p_malignant(multiclass_model: MulticlassModel,
                                                                           tmp_path: Path) -> None:
    m = multiclass_model
    run_cli("test", "--onnx", m.onnx, "--data", m.data, "--output", tmp_path / "rep", "--no-ci", "--quiet",
            "--skip-val", "--no-plots", "--no-html")
    shown = run_cli("monitor", "--onnx", m.onnx, "--reference", tmp_path / "rep", m.data / "train",
                    "--output", tmp_path / "mon", "--quiet", "--exit-zero")
    verdict = json.loads((tmp_path / "mon" / "monitor.json").read_text())
    new = predict_csv(m.onnx, m.data / "train", tmp_path / "train.csv")
    reference = predict_csv(m.onnx, m.data / "test", tmp_path / "test.csv")
    cd = verdict["class_distribution"]
    assert cd["classes"] == ["benign_brown", "benign_red", "malignant_brown"]
    assert cd["new_counts"] == [Counter(r["label"] for r in new)[c] for c in cd["classes"]]
    assert cd["reference_counts"] == [Counter(r["label"] for r in reference)[c] for c in cd["classes"]]
    assert cd["p_value"] == pytest.approx(class_distribution_test([r["label"] for r in reference],
                                                                  [r["label"] for r in new], cd["classes"])["p_value"])
    q = verdict["quantities"]["probability"]  # p_malignant, as predict writes it
    assert q["new_median"] == pytest.approx(np.median([float(r["p_malignant"]) for r in new]), abs=1e-6)
    assert q["reference_median"] == pytest.approx(np.median([float(r["p_malignant"]) for r in reference]), abs=1e-6)
    assert "classes" in shown.output and any("p_malignant" in n for n in verdict["notes"])
