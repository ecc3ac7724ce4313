"""The MLflow tracker on a real SQLite store: what it writes MLflow's own client reads back; a store that fails
warns once and never raises (no network is trained here)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from skinonnx.tracking import store
from skinonnx.tracking.run_record import open_training_run, read_record
from skinonnx.tracking.tracker import _FAILED_URIS, Tracker


def test_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store.ENV_URI, raising=False)
    assert store.resolve_uri("", tmp_path) == f"sqlite:///{(tmp_path / 'mlflow.db').resolve().as_posix()}"
    monkeypatch.setenv(store.ENV_URI, "http://127.0.0.1:5000")
    assert store.resolve_uri("", tmp_path) == "http://127.0.0.1:5000"
    assert store.resolve_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"
    assert store.local_artifact_root(store.default_uri(tmp_path)) == (tmp_path / "mlartifacts").resolve().as_uri()
    assert store.local_artifact_root("http://127.0.0.1:5000") is None
    assert store.ui_command("sqlite:////a b/mlflow.db") == "mlflow ui --backend-store-uri 'sqlite:////a b/mlflow.db'"


def test_a_run_with_params_metrics_files_and_a_child(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = store.default_uri(tmp_path / "runs")
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    (tmp_path / "runs" / "r1" / "metrics.csv").write_text("epoch,val_auc\n1,0.5\n")
    warnings: list[str] = []
    parent = open_training_run(tmp_path / "runs" / "r1", uri, run_name="r1", params={"lr": 0.001, "epochs": 2},
                               warn=warnings.append)
    for epoch, auc in ((1, 0.5), (2, 0.75)):
        parent.log_metrics({"val_auc": auc, "flag": True, "nan": float("nan")}, step=epoch)
    parent.log_files([tmp_path / "runs" / "r1" / "metrics.csv", tmp_path / "absent.png"])
    child = Tracker(uri, run_name="fold-0", parent=parent, warn=warnings.append)
    child.log_metrics({"val_auc": 0.6}, step=1)
    assert child.finish() and parent.finish()
    assert warnings == []

    client = MlflowClient(uri)
    run = client.get_run(parent.run_id())
    assert run.info.status == "FINISHED" and run.data.params == {"lr": "0.001", "epochs": "2"}
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_auc")] == [(1, 0.5), (2, 0.75)]
    assert "flag" not in run.data.metrics and "nan" not in run.data.metrics
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["metrics.csv"]
    assert client.get_run(child.run_id()).data.tags["mlflow.parentRunId"] == run.info.run_id
    assert read_record(tmp_path / "runs" / "r1")["run_id"] == run.info.run_id
    # the artifacts of the embedded store live beside it, not in the working folder
    assert run.info.artifact_uri.startswith((tmp_path / "runs" / "mlartifacts").resolve().as_uri())

    again = open_training_run(tmp_path / "runs" / "r1", uri, run_name="r1", params={"lr": 0.5}, warn=warnings.append)
    again.log_metrics({"val_auc": 0.8}, step=3)
    assert again.finish() and again.run_id() == run.info.run_id  # a resumed run continues its MLflow run
    assert len(client.get_metric_history(run.info.run_id, "val_auc")) == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_store_warns_once(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        _check_failing_store(store.default_uri(folder))
    finally:
        folder.chmod(stat.S_IRWXU)


def test_an_unreachable_server_warns_once_and_never_raises() -> None:
    _check_failing_store("http://127.0.0.1:9")  # the discard port: nothing listens


def test_a_store_that_cannot_be_created_warns_once(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder should be")
    _check_failing_store(f"sqlite:///{blocker.as_posix()}/mlflow.db")


def _check_failing_store(uri: str) -> None:
    _FAILED_URIS.discard(uri)
    warnings: list[str] = []
    first = Tracker(uri, run_name="r", warn=warnings.append)
    for epoch in range(3):
        first.log_metrics({"val_auc": 0.5}, step=epoch)
    first.log_params({"lr": 1})
    assert first.finish() is False
    second = Tracker(uri, run_name="r2", warn=warnings.append)  # a later run on the same store: no retry, no warning
    second.log_metrics({"val_auc": 0.5}, step=1)
    assert second.finish() is False and second.run_id() is None
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: experiment tracking to {uri} failed")
