"""Cross-validation end to end on tiny generated data: folds, OOF, resume, fold-at-a-time, and the
ensemble's export, test and predict."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from skinonnx.deploy.contract import DECISION_OUTPUTS
from tests.conftest import run_cli
from tests.scratch import scratch_dir

pytestmark = pytest.mark.slow
TRAIN = ("--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--quiet", "--lr", "1e-3")


@dataclass(frozen=True)
class CVRun:
    data: Path
    runs: Path
    run: Path
    onnx: Path


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def cv_run(request: pytest.FixtureRequest, synthetic_data: Path) -> CVRun:
    """A complete 2-fold run, exported as an ensemble with flip TTA and the uint8-input variant."""
    work = scratch_dir(request, "cv")
    out = run_cli("train", "--data", synthetic_data, *TRAIN, "--folds", "2", "--name", "cv", "--runs-dir",
                  work / "runs").output
    assert "[fold 1/2] " in out and "[fold 2/2] " in out and "[fold 0/" not in out  # 1-based, of the fold count
    records = {name: (work / "runs" / "cv" / name).read_bytes() for name in ("cv.json", "oof.csv")}
    onnx_path = work / "exports" / "ens.onnx"
    out = run_cli("export", "--run", work / "runs" / "cv", "-o", onnx_path, "--tta", "flip", "--embed-preprocessing",
                  "--parity-images", "4").output
    assert "✓ fold-0" in out and "✓ fold-1" in out and "✗" not in out
    assert records == {name: (work / "runs" / "cv" / name).read_bytes() for name in records}  # export only reads
    return CVRun(synthetic_data, work / "runs", work / "runs" / "cv", onnx_path)


def test_oof_is_complete_and_each_image_comes_from_the_model_that_did_not_train_on_it(cv_run: CVRun) -> None:
    import torch

    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.training.checkpoint import load_checkpoint, model_from_checkpoint

    folds = {r["path"]: int(r["fold"]) for r in _rows(cv_run.run / "folds.csv")}
    oof = _rows(cv_run.run / "oof.csv")
    assert sorted(r["path"] for r in oof) == sorted(folds)  # every pooled image, once
    assert len(folds) == 36 and all(int(r["fold"]) == folds[r["path"]] for r in oof)
    for k in (0, 1):
        config = json.loads((cv_run.run / f"fold-{k}" / "config.json").read_text())
        assert sum(config["counts"]["val"].values()) == sum(f == k for f in folds.values())
        assert sum(config["counts"]["train"].values()) == sum(f != k for f in folds.values())
    cv = json.loads((cv_run.run / "cv.json").read_text())
    assert cv["oof"]["calibration"]["fitted_on"] == "out-of-fold"
    assert cv["complete"] and cv["state"] == {"fold-0": "done", "fold-1": "done"}
    lo, hi = cv["oof"]["roc_auc_ci"]
    assert lo <= cv["oof"]["roc_auc"] <= hi and len(cv["oof"]["fold_val_auc"]) == 2
    # the logits in oof.csv are those of fold k's best.pt, which trained on the other fold only
    prep = Preprocessing.for_size(32)
    for row in (oof[0], oof[-1]):
        k = int(row["fold"])
        model = model_from_checkpoint(load_checkpoint(cv_run.run / f"fold-{k}" / "weights" / "best.pt"))
        with torch.no_grad():
            z = model(torch.from_numpy(prep.from_file(cv_run.data / row["path"])[None])).numpy()[0]
        assert np.allclose(z, [float(row["logit_benign"]), float(row["logit_malignant"])], atol=1e-4)


def test_ensemble_metadata_info_and_parity_fails_on_a_perturbed_member(cv_run: CVRun, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from skinonnx.errors import AtolError
    from skinonnx.export.ensemble import EnsembleWrapper, check_ensemble_parity
    from skinonnx.hashing import file_sha256
    from skinonnx.training.checkpoint import load_checkpoint, model_from_checkpoint

    info = json.loads(run_cli("info", cv_run.onnx, "--json").output)
    assert info["schema"]["valid"], info["schema"]["problems"]
    assert [o["name"] for o in info["outputs"]] == ["logits", "probabilities", "member_probabilities", "cam",
                                                    "ood_score", *DECISION_OUTPUTS]
    assert json.loads(info["metadata"]["ood"])["members"] == 2  # one score from both members
    assert info["outputs"][2]["shape"][1] == 2
    meta = info["metadata"]
    ensemble = json.loads(meta["ensemble"])
    bests = [cv_run.run / f"fold-{k}" / "weights" / "best.pt" for k in (0, 1)]
    assert ensemble["members"] == 2 and [f["sha256"] for f in ensemble["folds"]] == [file_sha256(p) for p in bests]
    cv = json.loads((cv_run.run / "cv.json").read_text())
    assert float(meta["temperature"]) == pytest.approx(cv["oof"]["temperature"])
    assert float(meta["decision_threshold"]) == pytest.approx(cv["oof"]["threshold"])
    assert json.loads(meta["tta"])["views"] == 2
    assert "ensemble  2 members" in run_cli("info", cv_run.onnx).output

    proto = onnx.load(str(cv_run.onnx))
    head = next(n for n in proto.graph.node if n.op_type == "Gemm" and n.name.startswith("/members.1/"))
    bias = next(t for t in proto.graph.initializer if t.name == head.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32([0, 0.5]), bias.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(proto, str(broken))
    states = [load_checkpoint(p) for p in bests]
    wrapper = EnsembleWrapper([model_from_checkpoint(s) for s in states], float(meta["temperature"]), 1, "flip")
    batch = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    assert check_ensemble_parity(wrapper, cv_run.onnx, batch, member_names=["fold-0", "fold-1"]).ok
    with pytest.raises(AtolError, match=r"parity FAILED: fold-1, logits, p_malignant, probabilities differ") as failed:
        check_ensemble_parity(wrapper, broken, batch, member_names=["fold-0", "fold-1"])
    assert "✓ fold-0" in failed.value.message and "✗ fold-1" in failed.value.message
    # the parity command rebuilds the members from the run the metadata names
    out = run_cli("parity", "--onnx", broken, "--images", "2", expect=1).output
    assert "✗ fold-1" in out and "✓ fold-0" in out


def test_test_and_predict_on_the_ensemble(cv_run: CVRun, tmp_path: Path) -> None:
    out = tmp_path / "report"
    printed = run_cli("test", "--onnx", cv_run.onnx, "--data", cv_run.data, "--out", out, "--bootstrap", "50",
                      "--skip-val").output
    assert "cross-validation: 2 folds (mean_logits, TTA flip)" in printed
    summary = json.loads((out / "summary.json").read_text())
    cv = summary["cross_validation"]
    assert cv["members"] == 2 and len(cv["fold_val_auc"]) == 2 and cv["tta"] == "flip"
    assert cv["ensemble_evaluated"]["roc_auc"] == summary["metrics"]["roc_auc"]
    assert cv["threshold_transfer"]["evaluated_sensitivity"] == summary["metrics"]["sensitivity"]
    assert (out / "cv_roc_curves.png").stat().st_size > 1000
    assert "## Cross-validation" in (out / "MODEL_CARD.md").read_text()
    documented = (Path(__file__).resolve().parents[2] / "docs" / "REPORTS.md").read_text()
    assert all(f"| `{key}` |" in documented for key in ["cross_validation", *cv])

    csv_path = tmp_path / "pred.csv"
    run_cli("predict", "--onnx", cv_run.onnx, cv_run.data / "test", "-o", csv_path)
    rows = _rows(csv_path)
    assert rows
    for row in rows:
        members = np.array([float(row["p_member_0"]), float(row["p_member_1"])])
        assert float(row["member_std"]) == pytest.approx(members.std(), abs=2e-6)


def test_uint8_variant_and_int8_run_on_the_ensemble(cv_run: CVRun, tmp_path: Path) -> None:
    from skinonnx.deploy.runtime import OnnxClassifier

    uint8 = cv_run.onnx.with_name("ens.uint8.onnx")
    assert OnnxClassifier(uint8, "cpu").has_members
    int8 = tmp_path / "ens.int8.onnx"
    out = run_cli("quantize", "--onnx", cv_run.onnx, "--data", cv_run.data, "-o", int8, "--calibration-images", "8",
                  "--min-agreement", "0.5", "--max-auc-change", "0.5").output
    assert "INT8 gate ok" in out and "bias correction" in out
    clf = OnnxClassifier(int8, "cpu")
    assert clf.has_members and "quantization" in clf.metadata and "ensemble" in clf.metadata


def test_fold_at_a_time_missing_and_unfinished_folds_and_resume(synthetic_data: Path, tmp_path: Path) -> None:
    from skinonnx.hashing import file_sha256

    runs = tmp_path / "runs"
    base = ("--data", synthetic_data, *TRAIN, "--name", "split", "--runs-dir", runs)
    run_cli("train", *base, "--folds", "2", "--fold", "0")
    run = runs / "split"
    out = run_cli("export", "--run", run, "-o", tmp_path / "x.onnx", expect=1).output
    assert "missing fold-1" in out and not (tmp_path / "x.onnx").exists()
    # another machine trains fold 1 with other settings: refused
    out = run_cli("train", *base, "--folds", "2", "--fold", "1", "--weight-decay", "0.5", expect=1).output
    assert "--weight-decay (run: 0.0001, given: 0.5)" in out
    run_cli("train", *base, "--folds", "2", "--fold", "1")
    # simulate a kill during fold 1's finishing: its state is "running", its last.pt exists
    state_file = run / "fold-1" / "fold.json"
    state_file.write_text(json.dumps({"fold": 1, "status": "running"}))
    out = run_cli("export", "--run", run, "-o", tmp_path / "x.onnx", expect=1).output
    assert "unfinished fold-1" in out
    before = file_sha256(run / "fold-0" / "weights" / "best.pt")
    out = run_cli("train", "--resume", "--name", "split", "--runs-dir", runs, "--data", synthetic_data,
                  "--quiet").output
    assert "fold 0: already done" in out and "resuming run 'fold-1'" in out and "complete" in out
    assert file_sha256(run / "fold-0" / "weights" / "best.pt") == before
    assert json.loads(state_file.read_text())["status"] == "done"
    run_cli("export", "--run", run, "-o", tmp_path / "x.onnx", "--parity-images", "2")
    # a member that differs from what its fold recorded is refused
    shutil.copy(run / "fold-0" / "weights" / "best.pt", run / "fold-1" / "weights" / "best.pt")
    out = run_cli("export", "--run", run, "-o", tmp_path / "y.onnx", expect=1).output
    assert "best.pt changed after fold-1 finished" in out


def test_bad_fold_options_are_one_line_errors_and_write_nothing(synthetic_data: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    base = ("train", "--data", synthetic_data, *TRAIN, "--name", "bad", "--runs-dir", runs)
    assert "'--folds': 1 is not in the range x>=2" in run_cli(*base, "--folds", "1", expect=2).output
    out = run_cli(*base, "--folds", "2", "--fold", "2", expect=1).output
    assert "--fold 2 is out of range: folds are numbered 0 to 1" in out
    out = run_cli(*base, "--folds", "19", expect=1).output
    assert "class 'benign' has only 18 images in train+val" in out
    assert "--fold needs --folds" in run_cli(*base, "--fold", "0", expect=2).output
    assert not runs.exists()


def test_plain_export_picks_the_newest_cv_run(cv_run: CVRun, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(cv_run.runs.parent)  # runs/cv here, no checkpoints/best.pt
    out = run_cli("export", "-o", "exports/plain.onnx", "--parity-images", "1").output
    assert "exporting the newest cross-validation run runs/cv" in out and "ensemble of 2 folds" in out
