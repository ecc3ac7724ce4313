"""ISIC 2017 Part 3 on real images: isic-bm's `diagnosis` (melanoma, nevus, seborrheic keratosis) as a 3-class task,
trained briefly, exported, tested, predicted and served; summary.json's numbers against scikit-learn on predict's
probabilities."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from .conftest import run_cli
from .serve.conftest import start_server
from .waits import WAIT_S

pytestmark = [pytest.mark.slow, pytest.mark.realdata]
CLASSES = ["melanoma", "nevus", "seborrheic_keratosis"]


def three_class_copy(real_data: Path, target: Path) -> Path:
    """A copy of isic-bm whose index.csv labels each image by sources.csv's diagnosis (same paths and splits)."""
    for split in ("train", "val", "test"):
        shutil.copytree(real_data / split, target / split)
    with open(real_data / "sources.csv", newline="") as handle:
        diagnosis = {r["path"]: r["diagnosis"] for r in csv.DictReader(handle)}
    with open(real_data / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    with open(target / "index.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows([r["path"], diagnosis[r["path"]], r["split"]] for r in rows)
    return target


def test_isic2017_part3_three_classes_train_export_test_predict_serve(real_data: Path, tmp_path: Path) -> None:
    data = three_class_copy(real_data, tmp_path / "isic3")
    ck, onnx = tmp_path / "ck", tmp_path / "k3.onnx"
    run_cli("train", "--data", data, "--weights", "none", "--epochs", "1", "--image-size", "48", "--batch-size", "32",
            "--malignant", "melanoma", "--checkpoint-dir", ck, "--runs-dir", tmp_path / "runs", "--name", "isic3",
            "--compile", "off", "--quiet")
    run_cli("export", "--checkpoint", ck / "best.pt", "-o", onnx, "--data", data, "--parity-images", "8")
    tested = run_cli("test", "--onnx", onnx, "--data", data, "--output", tmp_path / "rep", "--provider", "cpu",
                     "--bootstrap", "100", "--quiet")
    s = json.loads((tmp_path / "rep" / "summary.json").read_text())
    out = tmp_path / "p.json"  # predict's JSON keeps full precision: the CSV's six decimals could tie two scores
    run_cli("predict", "--onnx", onnx, data / "test", "-o", out, "--provider", "cpu", "--quiet")
    rows = json.loads(out.read_text())["predictions"]
    with open(data / "index.csv", newline="") as handle:
        truth_of = {(data / r["path"]).resolve(): r["label"] for r in csv.DictReader(handle)}

    m = s["multiclass"]["metrics"]
    assert s["classes"] == CLASSES and m["n"] == len(rows) == 112
    truth = np.array([CLASSES.index(truth_of[Path(r["path"]).resolve()]) for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    decided = np.array([CLASSES.index(r["label"]) for r in rows])
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, decided), abs=1e-12)
    aucs = {c: roc_auc_score(truth == k, probs[:, k]) for k, c in enumerate(CLASSES)}
    assert {c: m["per_class"][c]["auc"] for c in CLASSES} == pytest.approx(aucs, abs=1e-12)
    assert m["isic2017"] == pytest.approx({"melanoma_auc": aucs["melanoma"],
                                           "seborrheic_keratosis_auc": aucs["seborrheic_keratosis"],
                                           "mean_auc": (aucs["melanoma"] + aucs["seborrheic_keratosis"]) / 2})
    assert s["multiclass"]["malignant_classes"] == ["melanoma"]  # the malignancy group: melanoma against the rest
    assert s["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(truth == 0, [float(r["p_malignant"]) for r in rows]),
                                                    abs=1e-12)
    assert "ISIC 2017 Part 3" in tested.output

    server = start_server(onnx, tmp_path / "serve.log")  # 127.0.0.1, a free port
    try:
        for row in rows[:: len(rows) // 6][:6]:
            answer = httpx.post(f"{server.url}/classify", content=Path(row["path"]).read_bytes(), timeout=WAIT_S)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert list(body["probabilities"]) == CLASSES and body["malignant_classes"] == ["melanoma"]
            for c in CLASSES:
                assert abs(body["probabilities"][c] - float(row[f"p_{c}"])) <= 1e-6
            assert body["label"] == row["prediction"]
    finally:
        assert server.stop() == 0
