"""Integration on real ISIC dermoscopy images (../shared/data/isic-bm): train briefly, export, parity, test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from .conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


def test_brief_training_on_real_images_exports_with_parity(real_data: Path, tmp_path: Path) -> None:
    ck, out = tmp_path / "ck", tmp_path / "model.onnx"
    run_cli("train", "--data", real_data, "--weights", "none", "--epochs", "1", "--image-size", "64",
            "--batch-size", "32", "--checkpoint-dir", ck, "--runs-dir", tmp_path / "runs", "--name", "real", "--quiet")
    exported = run_cli("export", "--checkpoint", ck / "best.pt", "-o", out, "--data", real_data,
                       "--parity-images", "24")
    assert "parity on 24 real images" in exported.output
    assert exported.output.count("✓") == 13  # 5 outputs x 2 batch sizes; malignant, label, in_distribution agree

    # a deliberately broken copy fails the standalone parity command on the same real images
    model = onnx.load(str(out))
    bias = next(t for t in model.graph.initializer if list(t.dims) == [2])
    values = onnx.numpy_helper.to_array(bias) + np.array([0.0, 0.3])
    bias.CopyFrom(onnx.numpy_helper.from_array(values.astype("float32"), bias.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    failed = run_cli("parity", "--checkpoint", ck / "best.pt", "--onnx", tmp_path / "broken.onnx",
                     "--data", real_data, expect=1)
    assert "parity FAILED" in failed.output

    tested = run_cli("test", "--onnx", out, "--data", real_data, "--out", tmp_path / "rep", "--provider", "cpu",
                     "--quiet")
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert summary["metrics"]["n"] == 112 and summary["metrics"]["n_positive"] == 56
    assert 0.0 <= summary["metrics"]["roc_auc"] <= 1.0
    assert "roc_auc" in tested.output


def test_two_fold_cross_validation_on_real_images(real_data: Path, tmp_path: Path) -> None:
    run_cli("train", "--data", real_data, "--weights", "none", "--epochs", "1", "--image-size", "32",
            "--batch-size", "64", "--runs-dir", tmp_path / "runs", "--name", "cv", "--quiet", "--folds", "2")
    run = tmp_path / "runs" / "cv"
    cv = json.loads((run / "cv.json").read_text())
    assert cv["complete"] and cv["n_pooled"] == 452 and cv["n_test"] == 112
    assert (run / "oof.csv").read_text().count("\n") == 453  # header + every pooled image
    assert [sum(c) for c in cv["fold_class_counts"]] == [226, 226]
    out = run_cli("export", "--run", run, "-o", tmp_path / "ens.onnx", "--parity-images", "7").output
    assert "✓ fold-1" in out and "✗" not in out
