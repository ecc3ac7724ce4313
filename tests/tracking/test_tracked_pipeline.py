"""train --track -> export -> test on the embedded SQLite store, read back with MLflow's own client; CV runs as a
parent with one child per fold; a dead tracking server never fails training."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli

mlflow = pytest.importorskip("mlflow")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

TINY = ("--weights", "none", "--image-size", "32", "--batch-size", "8", "--threads", "1", "--quiet")


@pytest.fixture(autouse=True)
def _no_env_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_train_export_test_are_found_by_mlflow(tmp_path: Path, synthetic_data: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    trained = run_cli("train", "--data", synthetic_data, "--epochs", "2", "--name", "tracked", "--runs-dir", runs,
                      "--track", *TINY)
    uri = f"sqlite:///{(runs / 'mlflow.db').resolve().as_posix()}"
    assert f"see it with: mlflow ui --backend-store-uri {uri}" in trained.output
    for name in ("a.onnx", "b.onnx"):
        run_cli("export", "--checkpoint", runs / "tracked" / "weights" / "best.pt", "--output", tmp_path / name,
                "--data", synthetic_data, "--parity-images", "4", "--no-ood")
    tested = run_cli("test", "--onnx", tmp_path / "a.onnx", "--data", synthetic_data, "--no-html", "--no-plots",
                     "--skip-val", "--bootstrap", "20", "--quiet", "--output", tmp_path / "report")
    assert "test results logged to MLflow run" in tested.output

    mlflow.set_tracking_uri(uri)
    found = mlflow.search_runs(search_all_experiments=True, filter_string="tags.mlflow.runName = 'tracked'")
    assert len(found) == 1
    run = found.iloc[0]
    assert run["status"] == "FINISHED" and run["params.epochs"] == "2" and run["params.image_size"] == "32"
    assert 0.0 <= run["metrics.best_val_auc"] <= 1.0 and "metrics.test_test_roc_auc" in found.columns
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(run["run_id"], "val_auc")] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"config.json", "metrics.csv", "training_curves.png"} <= artifacts
    assert any(a.startswith("test-test-") for a in artifacts)
    versions = client.search_model_versions("name='skinonnx-tracked'")
    assert sorted(int(v.version) for v in versions) == [1, 2]  # one registered version per export
    assert all(v.run_id == run["run_id"] for v in versions)
    model = mlflow.models.get_model_info("models:/skinonnx-tracked/1")
    assert list(model.signature.inputs.to_dict()[0]["tensor-spec"]["shape"][1:]) == [3, 32, 32]
    assert model.metadata and "classes" in str(model.metadata)


def test_cross_validation_is_a_parent_run_with_a_child_per_fold(tmp_path: Path, synthetic_data: Path) -> None:
    runs = tmp_path / "runs"
    run_cli("train", "--data", synthetic_data, "--epochs", "1", "--folds", "2", "--name", "cv", "--runs-dir", runs,
            "--track", *TINY)
    mlflow.set_tracking_uri(f"sqlite:///{(runs / 'mlflow.db').as_posix()}")
    found = mlflow.search_runs(search_all_experiments=True)
    parent = found[found["tags.mlflow.runName"] == "cv"]
    assert len(parent) == 1 and "metrics.oof_auc" in found.columns
    children = found[found["tags.mlflow.parentRunId"] == parent.iloc[0]["run_id"]]
    assert sorted(children["tags.mlflow.runName"]) == ["fold-0", "fold-1"]
    assert set(children["status"]) == {"FINISHED"}


def test_a_dead_tracking_server_warns_once_and_training_finishes(tmp_path: Path, synthetic_data: Path) -> None:
    result = run_cli("train", "--data", synthetic_data, "--epochs", "2", "--name", "dead", "--runs-dir",
                     tmp_path / "runs", "--tracking-uri", "http://127.0.0.1:9", *TINY)
    assert result.output.count("warning: experiment tracking to http://127.0.0.1:9 failed") == 1
    assert (tmp_path / "runs" / "dead" / "weights" / "best.pt").is_file()
    assert not (tmp_path / "runs" / "dead" / "tracking.json").exists()


def test_a_tracked_study_is_a_parent_run_with_a_child_per_trial(tmp_path: Path, synthetic_data: Path) -> None:
    pytest.importorskip("optuna")
    runs = tmp_path / "runs"
    run_cli("tune", "--data", synthetic_data, "--trials", "2", "--epochs", "1", "--pruner", "none", "--name", "st",
            "--runs-dir", runs, "--track", *TINY)
    mlflow.set_tracking_uri(f"sqlite:///{(runs / 'mlflow.db').as_posix()}")
    found = mlflow.search_runs(search_all_experiments=True)
    study = found[found["tags.skinonnx.kind"] == "study"]
    assert len(study) == 1 and study.iloc[0]["status"] == "FINISHED" and "metrics.best_val_auc" in found.columns
    trials = found[found["tags.mlflow.parentRunId"] == study.iloc[0]["run_id"]]
    assert sorted(trials["tags.mlflow.runName"]) == ["trial-000", "trial-001"]
    client = mlflow.tracking.MlflowClient()
    assert {"trials.csv", "best_config.json"} <= {a.path for a in client.list_artifacts(study.iloc[0]["run_id"])}
