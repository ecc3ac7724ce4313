"""End to end on a tiny synthetic set: train -> export (+parity) -> parity -> test -> predict."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import onnx
import pytest
import torch

from skinonnx.deploy.contract import DECISION_OUTPUTS
from skinonnx.deploy.runtime import OnnxClassifier
from skinonnx.training.checkpoint import load_checkpoint

from .badfiles import cli_error
from .conftest import TrainedModel, run_cli

pytestmark = pytest.mark.slow


def test_train_writes_checkpoints_metrics_and_config(trained: TrainedModel) -> None:
    best = load_checkpoint(trained.checkpoint)
    last = load_checkpoint(trained.last)
    assert best["classes"] == ["benign", "malignant"] and best["positive_index"] == 1
    assert last["epoch"] == 2 and 1 <= best["epoch"] <= 2
    assert best["preprocessing"]["image_size"] == 32
    assert 0.0 <= best["decision"]["threshold"] <= 1.0 and best["decision"]["policy"] == "youden"
    assert best["calibration"]["temperature"] > 0
    assert "optimizer" in last and "scheduler" in last
    rows = list(csv.DictReader((trained.run_dir / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"train_loss", "val_loss", "val_auc", "lr", "train_images_per_s"} <= set(rows[0])
    config = json.loads((trained.run_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["classes"] == ["benign", "malignant"]


def test_checkpoint_holds_plain_data_only(trained: TrainedModel) -> None:
    # weights_only loading is what load_checkpoint does; a plain torch.load with it must also work
    state = torch.load(trained.checkpoint, weights_only=True)
    assert isinstance(state["config"], dict)


def test_onnx_metadata_is_self_describing(trained: TrainedModel) -> None:
    model = onnx.load(str(trained.onnx))
    meta = {p.key: p.value for p in model.metadata_props}
    best = load_checkpoint(trained.checkpoint)
    assert json.loads(meta["classes"]) == ["benign", "malignant"]
    assert meta["positive_class"] == "malignant"
    assert int(meta["image_size"]) == 32 and int(meta["resize_size"]) == round(32 / 0.875)
    assert json.loads(meta["mean"]) == pytest.approx([0.485, 0.456, 0.406])
    assert float(meta["decision_threshold"]) == pytest.approx(best["decision"]["threshold"])
    assert float(meta["temperature"]) == pytest.approx(best["calibration"]["temperature"])
    assert len(meta["source_checkpoint_sha256"]) == 64
    assert [o.name for o in model.graph.output] == ["logits", "probabilities", "cam", "ood_score",
                                                   *DECISION_OUTPUTS]
    assert float(meta["ood_threshold"]) > 0 and json.loads(meta["ood"])["method"] == "mahalanobis"
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # dynamic batch axis


def test_onnx_probabilities_match_checkpoint_on_real_pixels(trained: TrainedModel) -> None:
    from skinonnx.export.parity import torch_outputs
    from skinonnx.training.checkpoint import model_from_checkpoint

    state = load_checkpoint(trained.checkpoint)
    clf = OnnxClassifier(trained.onnx, "cpu")
    paths = sorted((trained.data / "val").rglob("*.png"))[:5]
    batch = np.stack([clf.preprocessing.from_file(p) for p in paths])
    expected = torch_outputs(model_from_checkpoint(state), batch, state["calibration"]["temperature"])
    np.testing.assert_allclose(clf.predict_arrays(batch), expected["probabilities"], atol=1e-4)


def test_parity_command_passes_and_fails_on_a_broken_model(trained: TrainedModel, tmp_path) -> None:
    ok = run_cli("parity", "--checkpoint", trained.checkpoint, "--onnx", trained.onnx, "--data", trained.data)
    assert "✓ probabilities" in ok.output and "parity ok" in ok.output
    broken = tmp_path / "broken.onnx"
    model = onnx.load(str(trained.onnx))
    fc_bias = next(t for t in model.graph.initializer if t.dims == [2] and "bias" in t.name)
    values = onnx.numpy_helper.to_array(fc_bias).copy()
    values[1] += 0.5  # a small, plausible corruption of the head
    fc_bias.CopyFrom(onnx.numpy_helper.from_array(values, fc_bias.name))
    onnx.save(model, str(broken))
    bad = run_cli("parity", "--checkpoint", trained.checkpoint, "--onnx", broken, "--data", trained.data, expect=1)
    assert "✗" in bad.output and "FAILED" in bad.output
    assert "Traceback" not in bad.output


def test_export_failing_parity_leaves_no_file(trained: TrainedModel, tmp_path) -> None:
    out = tmp_path / "strict.onnx"
    result = run_cli("export", "--checkpoint", trained.checkpoint, "--output", out, "--data", trained.data,
                     "--atol", "1e-15", "--parity-images", "4", expect=1)
    assert "parity FAILED" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))


def test_test_command_reports_metrics_and_csv(trained: TrainedModel, tmp_path) -> None:
    out = tmp_path / "report"
    result = run_cli("test", "--onnx", trained.onnx, "--data", trained.data, "--out", out, "--provider", "cpu",
                     "--quiet")
    assert "roc_auc" in result.output and "confusion matrix" in result.output
    rows = list(csv.DictReader((out / "predictions.csv").read_text().splitlines()))
    assert len(rows) == 12  # 6 + 6 test images
    summary = json.loads((out / "summary.json").read_text())
    assert summary["provider"] == "CPUExecutionProvider"
    c = summary["metrics"]["confusion"]
    assert c["tp"] + c["fn"] == 6 and c["tn"] + c["fp"] == 6
    threshold = summary["threshold"]
    for row in rows:  # the CSV's predictions follow the model's own threshold
        assert (row["prediction"] == "malignant") == (float(row["probability"]) >= threshold)


def test_predict_on_folder_glob_and_bad_file(trained: TrainedModel, tmp_path) -> None:
    folder = tmp_path / "imgs"
    shutil.copytree(trained.data / "test" / "malignant", folder)
    (folder / "broken.jpg").write_bytes(b"<html>not an image</html>")
    out = tmp_path / "pred.json"
    result = run_cli("predict", "--onnx", trained.onnx, str(folder), str(trained.data / "val" / "benign" / "*.png"),
                     "--output", out, "--provider", "cpu", "--quiet")
    data = json.loads(out.read_text())
    assert len(data["predictions"]) == 6 + 6
    assert [s["path"] for s in data["skipped"]] == [str(folder / "broken.jpg")]
    assert "1 skipped" in result.output
    p = data["predictions"][0]
    assert p["p_benign"] + p["p_malignant"] == pytest.approx(1.0, abs=1e-5)


def test_resume_continues_to_the_requested_epoch(trained: TrainedModel, tmp_path) -> None:
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    shutil.copy(trained.last, ckpt / "last.pt")
    shutil.copy(trained.checkpoint, ckpt / "best.pt")
    result = run_cli("train", "--resume", "--checkpoint-dir", ckpt, "--runs-dir", tmp_path / "runs",
                     "--epochs", "3", "--quiet")
    assert "resuming run 't'" in result.output and "(epoch 2 of 3)" in result.output
    last = load_checkpoint(ckpt / "last.pt")
    assert last["epoch"] == 3 and last["config"]["epochs"] == 3
    assert [h["epoch"] for h in last["history"]] == [1, 2, 3]
    assert last["config"]["lr"] == 1e-3 and last["config"]["image_size"] == 32  # the run's own settings kept
    assert (tmp_path / "runs" / "t" / "metrics.csv").read_text().count("\n") == 4  # header + 3 epochs


@pytest.mark.parametrize("option, value, says", [
    ("--lr", "0.01", "--lr (run: 0.001, given: 0.01)"),
    ("--image-size", "64", "--image-size (run: 32, given: 64)"),
    ("--no-calibrate", None, "--calibrate (run: True, given: False)"),
])
def test_resume_refuses_options_that_would_change_the_run(trained: TrainedModel, tmp_path, option, value,
                                                          says) -> None:
    """Before, --resume silently ignored them; now the user hears which ones and why."""
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    shutil.copy(trained.last, ckpt / "last.pt")
    args = [option] if value is None else [option, value]
    cli_error("train", "--resume", "--checkpoint-dir", ckpt, "--runs-dir", tmp_path / "runs", *args, "--quiet",
              says=(says, "would change the run itself"))
    assert load_checkpoint(ckpt / "last.pt")["epoch"] == 2  # untouched


def test_resume_with_a_cosine_schedule_keeps_its_epoch_count(trained: TrainedModel, tmp_path) -> None:
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    state = torch.load(trained.last, weights_only=True)
    state["config"]["scheduler"] = "cosine"
    torch.save(state, ckpt / "last.pt")
    cli_error("train", "--resume", "--checkpoint-dir", ckpt, "--epochs", "5", "--quiet",
              says=("cosine schedule", "2 epochs"))


def test_test_defaults_to_the_training_data_recorded_in_the_model(trained: TrainedModel, tmp_path) -> None:
    meta = {p.key: p.value for p in onnx.load(str(trained.onnx)).metadata_props}
    assert meta["training_data"] == str(trained.data.resolve())
    result = run_cli("test", "--onnx", trained.onnx, "--out", tmp_path / "r", "--provider", "cpu", "--quiet",
                     "--no-ci", "--no-plots")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["data"]["root"] == str(trained.data.resolve()) and summary["metrics"]["n"] == 12
    assert "roc_auc" in result.output
