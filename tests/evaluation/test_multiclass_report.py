"""`test` on a K-class ONNX file: summary.json's K-class numbers against scikit-learn on the probabilities and labels
`predict` writes for the same file and images; the malignancy group through the binary path; `--by`; `--no-ci`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

from skinonnx.evaluation.metrics import binary_metrics

from ..conftest import MulticlassModel, run_cli

pytestmark = pytest.mark.slow


def predict_csv(onnx: Path, images: Path, out: Path) -> list[dict[str, str]]:
    """`predict`'s rows for ``images``, sorted by path; from its JSON output, whose probabilities keep full precision
    (the CSV's six decimals could tie two close scores and move an AUC)."""
    out = out.with_suffix(".json")
    run_cli("predict", "--onnx", onnx, images, "-o", out, "--quiet")
    return sorted(json.loads(out.read_text())["predictions"], key=lambda r: r["path"])


def sklearn_scores(rows: list[dict[str, str]], classes: list[str]) -> dict[str, object]:
    """What scikit-learn says of predict's rows (truth = the image's class folder; decision = the 'label' column)."""
    truth = np.array([classes.index(Path(r["path"]).parent.name) for r in rows])
    decided = np.array([classes.index(r["label"]) for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    return {"truth": truth, "probs": probs,
            "balanced_accuracy": balanced_accuracy_score(truth, decided),
            "auc": {c: roc_auc_score(truth == k, probs[:, k]) for k, c in enumerate(classes)},
            "confusion": confusion_matrix(truth, decided, labels=list(range(len(classes)))).tolist(),
            "confusion_normalised": confusion_matrix(truth, decided, labels=list(range(len(classes))),
                                                     normalize="true"),
            "p_malignant": np.array([float(r["p_malignant"]) for r in rows])}


def test_k_class_test_report_equals_scikit_learn_on_predicts_rows(multiclass_model: MulticlassModel,
                                                                   tmp_path: Path) -> None:
    m = multiclass_model
    tested = run_cli("test", "--onnx", m.onnx, "--data", m.data, "--output", tmp_path / "rep", "--bootstrap", "50",
                     "--quiet", "--skip-val")
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    classes = s["classes"]
    block = s["multiclass"]["metrics"]
    rows = predict_csv(m.onnx, m.data / "test", tmp_path / "p.csv")
    want = sklearn_scores(rows, classes)

    assert block["n"] == len(rows) == 9
    assert block["balanced_accuracy"] == pytest.approx(want["balanced_accuracy"], abs=1e-12)
    assert {c: block["per_class"][c]["auc"] for c in classes} == pytest.approx(want["auc"], abs=1e-12)
    assert block["macro_auc"] == pytest.approx(np.mean(list(want["auc"].values())), abs=1e-12)
    assert block["confusion"] == want["confusion"]
    counts = np.array(want["confusion"])
    np.testing.assert_allclose(block["confusion_normalised"], want["confusion_normalised"])
    for k, c in enumerate(classes):  # sensitivity and specificity of the decided labels, one-vs-rest
        tp, fn = counts[k, k], counts[k].sum() - counts[k, k]
        fp = counts[:, k].sum() - counts[k, k]
        assert block["per_class"][c]["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert block["per_class"][c]["specificity"] == pytest.approx((counts.sum() - tp - fn - fp) / (counts.sum()
                                                                                                     - tp - fn))
    ci = s["multiclass"]["ci"]
    assert ci["balanced_accuracy"][0] <= block["balanced_accuracy"] <= ci["balanced_accuracy"][1]
    assert set(ci["per_class"]) == set(classes) and "isic2017" not in block  # no melanoma / SK classes here

    # the malignancy group: p_malignant against the true group, the binary code path at the file's threshold
    group = s["multiclass"]["malignant_classes"]
    assert group == ["benign_red", "malignant_brown"] and s["positive_class"] == "malignant"
    truth_group = np.isin(want["truth"], [classes.index(c) for c in group]).astype(int)
    expected = binary_metrics(truth_group, want["p_malignant"], s["threshold"])
    assert s["metrics"]["n_positive"] == int(truth_group.sum())
    assert s["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(truth_group, want["p_malignant"]), abs=1e-12)
    assert s["metrics"]["confusion"] == expected["confusion"]

    out = tested.output
    assert out.index("balanced accuracy") < out.index("ROC AUC test")  # the headline over the classes first
    assert "multiclass_confusion.png" in s["files"] and (tmp_path / "rep" / "multiclass_confusion.png").stat().st_size
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="multiclass"' in page and "multiclass_confusion.png" in page
    assert "## Performance over the classes" in (tmp_path / "rep" / "MODEL_CARD.md").read_text()
    with open(tmp_path / "rep" / "predictions.csv", newline="") as handle:
        report_rows = list(csv.DictReader(handle))
    assert [f"p_{c}" for c in classes] + ["malignant"] <= list(report_rows[0])


def test_k_class_test_by_a_column_and_without_intervals(multiclass_model: MulticlassModel, tmp_path: Path) -> None:
    m = multiclass_model
    rows = predict_csv(m.onnx, m.data / "test", tmp_path / "p.csv")
    sites = {r["path"]: "head" if k % 2 else "trunk" for k, r in enumerate(rows)}
    attributes = tmp_path / "attributes.csv"
    with open(attributes, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "site"])
        writer.writerows([str(Path(p).resolve()), site] for p, site in sites.items())  # absolute paths
    tested = run_cli("test", "--onnx", m.onnx, "--data", m.data, "--output", tmp_path / "rep", "--no-ci", "--quiet",
                     "--skip-val", "--no-plots", "--no-html", "--by", "site", "--attributes", attributes)
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert s["multiclass"]["ci"] is None and s["ci"] is None
    classes = s["classes"]
    want = sklearn_scores(rows, classes)
    decided = np.array([classes.index(r["label"]) for r in rows])
    (block,) = s["subgroups"]
    assert {g["group"] for g in block["groups"]} == {"head", "trunk"}
    for g in block["groups"]:
        mask = np.array([sites[r["path"]] == g["group"] for r in rows])
        assert g["n"] == int(mask.sum())
        assert g["multiclass"]["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(want["truth"][mask], decided[mask]), abs=1e-12)
        assert g["multiclass"]["balanced_accuracy_ci"] is None
        assert f"{g['group']}" in tested.output
    assert "balanced acc." in tested.output
    assert "multiclass_balanced_accuracy" in (tmp_path / "rep" / "subgroups.csv").read_text()
    assert "balanced accuracy over the classes" in (tmp_path / "rep" / "MODEL_CARD.md").read_text()
