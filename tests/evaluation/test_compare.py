"""A fold ensemble's `test` report (out-of-fold beside test, calibration fitted out-of-fold, the pooled val split left
out) and `compare` of a single model with a fold ensemble (32 px, 1 epoch: seconds on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from skinonnx.evaluation.verdict import verdict_of
from tests.scratch import scratch_dir
from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TRAIN = ("--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--quiet", "--lr", "1e-3")


@dataclass(frozen=True)
class Ensemble:
    onnx: Path
    report: Path
    stdout: str


@pytest.fixture(scope="module")
def ensemble(request: pytest.FixtureRequest, synthetic_data: Path) -> Ensemble:
    """A 2-fold ensemble of the shared synthetic data, and its `test` report with the validation split asked for."""
    work = scratch_dir(request, "cvcompare")
    run_cli("train", "--data", synthetic_data, *TRAIN, "--folds", "2", "--name", "cv", "--runs-dir", work / "runs")
    onnx_path = work / "ens.onnx"
    run_cli("export", "--run", work / "runs" / "cv", "-o", onnx_path, "--parity-images", "4")
    out = work / "report"
    stdout = run_cli("test", "--onnx", onnx_path, "--data", synthetic_data, "--output", out, "--bootstrap", "50",
                     "--quiet", "--no-plots").stdout
    return Ensemble(onnx_path, out, stdout)


def test_ensemble_report_puts_out_of_fold_beside_test_and_says_where_calibration_was_fitted(ensemble) -> None:
    s = json.loads((ensemble.report / "summary.json").read_text())
    cal = s["calibration"]
    assert cal["fitted_on"] == "out-of-fold" and cal["at_training"]["fitted_on"] == "out-of-fold"
    # val was pooled into the folds: not run, and the reason is shown instead of an in-sample row
    assert cal["validation"] is None and s["validation"] is None
    assert "1 of the 2 members trained on each image" in cal["validation_left_out"]
    oof = s["cross_validation"]["oof"]
    verdict = verdict_of(s)
    assert [e.name for e in verdict.estimates] == ["test", "out-of-fold"] and verdict.advice
    assert s["verdict"] == verdict.as_dict()
    head = ensemble.stdout.splitlines()[2]
    assert head.startswith("ROC AUC test ") and f"| out-of-fold {oof['roc_auc']:.3f}" in head
    assert verdict.advice in ensemble.stdout and "val   left out: the validation split was pooled" in ensemble.stdout
    card = (ensemble.report / "MODEL_CARD.md").read_text()
    assert "fitted on the pooled out-of-fold predictions" in card and "fitted on the validation split" not in card
    assert "| out-of-fold at training time (PyTorch) |" in card and "No validation row: the validation split" in card
    assert f"| out-of-fold | {oof['roc_auc']:.3f} |" in card and verdict.advice in card
    page = (ensemble.report / "report.html").read_text()
    headline = page.split('<section id="headline">')[1].split("</section>")[0]
    assert "ROC AUC, out-of-fold" in headline and "ROC AUC, test" in headline and 'data-verdict="advice"' in headline


def test_compare_a_single_model_and_an_ensemble_in_one_table_without_torch(trained: TrainedModel, ensemble,
                                                                          tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    code = ("import sys; from skinonnx.cli import main; "
            f"main(['compare', {str(trained.onnx)!r}, {str(ensemble.onnx)!r}, '-o', {str(out)!r}, "
            "'--bootstrap', '50', '--speed-seconds', '0', '--quiet'], standalone_mode=False); "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]; "
            "print('TORCH', bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0 and "TORCH []" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    doc = json.loads((out / "compare.json").read_text())
    single, ens = doc["models"]
    assert single["kind"] == "single" and ens["kind"] == "ensemble of 2 folds"
    assert single["selection_name"] == "validation (best epoch)" and ens["selection_name"] == "out-of-fold"
    # the same machinery as `test`: same AUC and, with the same resamples and seed, the same interval
    tested = json.loads((ensemble.report / "summary.json").read_text())
    assert ens["roc_auc"] == pytest.approx(tested["metrics"]["roc_auc"])
    assert ens["roc_auc_ci"] == pytest.approx(tested["ci"]["roc_auc"])
    assert ens["selection_auc"] == pytest.approx(tested["cross_validation"]["oof"]["roc_auc"])
    assert ens["size_bytes"] == ensemble.onnx.stat().st_size and single["size_bytes"] == trained.onnx.stat().st_size
    assert single["images_per_s"] > 0 and ens["images_per_s"] > 0 and ens["speed_batch"] == 12
    best, other = (single, ens) if single["vs_best"] is None else (ens, single)
    assert other["vs_best"]["difference"] == pytest.approx(other["roc_auc"] - best["roc_auc"])
    assert other["vs_best"]["images"] == 12 and len(other["vs_best"]["ci"]) == 2
    table = done.stdout.splitlines()
    assert table[0].split()[:2] == ["model", "kind"] and any(line.startswith("model.onnx ") for line in table)
    assert any(line.startswith("ens.onnx ") and "out-of-fold" in line for line in table)
    assert "| ens.onnx | ensemble of 2 folds |" in (out / "compare.md").read_text()


def test_compare_refuses_one_model_or_the_same_model_twice(trained: TrainedModel) -> None:
    assert "at least two models" in run_cli("compare", trained.onnx, expect=2).output
    assert "named twice" in run_cli("compare", trained.onnx, trained.onnx, expect=2).output
