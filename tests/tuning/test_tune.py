"""`tune` end to end on tiny synthetic data (32 px, 3 epochs a trial): pruning, kill + resume without repeating
finished trials, the best settings reproduced by `train`, and the Ray Tune engine on 2 local workers."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.waits import WAIT_S

pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _tune_args(data: Path, runs: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "tune", "--data", str(data), "--runs-dir", str(runs), "--weights",
            "none", "--image-size", "32", "--batch-size", "8", "--threads", "1", "--quiet", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}


def _trials(study_dir: Path) -> list[dict[str, str]]:
    with open(study_dir / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_tune_prunes_resumes_after_a_kill_and_train_reproduces_the_best(tmp_path: Path, synthetic_data: Path) -> None:
    runs = tmp_path / "runs"
    args = _tune_args(synthetic_data, runs, "--trials", "8", "--epochs", "3", "--pruner", "median", "--name", "s")
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    first: list[str] = []
    for line in proc.stdout:  # wait for the event: the third finished trial's line
        first.append(line)
        if line.startswith("trial 3/8 "):
            break
    started = runs / "s" / "logs" / "trial-003.log"  # the fourth trial has started (its log file exists)
    deadline = time.monotonic() + WAIT_S
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert started.exists(), "".join(first)
    proc.send_signal(signal.SIGKILL)  # a real kill: no handler runs, the running trial stays RUNNING
    proc.wait(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL, "".join(first)
    import optuna

    study = optuna.load_study(study_name="s", storage=f"sqlite:///{runs / 's' / 'study.db'}")
    finished_before = {t.number: (t.state, t.value) for t in study.get_trials()
                       if t.state != optuna.trial.TrialState.RUNNING}
    assert len(finished_before) >= 3

    second = subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=WAIT_S)
    assert second.returncode == 0, second.stdout + second.stderr
    out = second.stdout
    assert "resuming study" in out and f"({len(finished_before)} done)" in out
    assert "trial 3 was interrupted: it runs again" in out
    progress = [line for line in out.splitlines() if re.match(r"trial \d+/8 ", line)]
    assert progress[0].startswith(f"trial {len(finished_before) + 1}/8 ") and progress[-1].startswith("trial 8/8 ")
    assert " | best " in progress[-1] and progress[-1].endswith("| done")

    rows = _trials(runs / "s")
    counted = [r for r in rows if r["state"] != "interrupted"]
    assert len(counted) == 8  # the killed trial ran again; no finished trial did
    assert [r["number"] for r in rows if r["state"] == "interrupted"] == ["3"]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{runs / 's' / 'study.db'}")
    for number, (state, value) in finished_before.items():
        assert (study.trials[number].state, study.trials[number].value) == (state, value)
    states = {r["state"] for r in counted}
    assert states <= {"complete", "pruned", "fail"} and "pruned" in states, rows
    pruned_epochs = [int(r["epochs"]) for r in counted if r["state"] == "pruned"]
    assert all(e < 3 for e in pruned_epochs)  # pruned trials stopped before their last epoch
    assert (runs / "s" / "importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # trial 0 trained train's own settings
    assert float(rows[0]["param_lr"]) == 3e-4 and float(rows[0]["param_weight_decay"]) == 1e-4

    config = runs / "s" / "best_config.json"
    assert f"reproduce with: skinonnx train --config {config.relative_to(tmp_path)}" in out or str(config) in out
    best = max((r for r in counted if r["state"] == "complete"), key=lambda r: float(r["value"]))
    settings = json.loads(config.read_text())
    assert settings["lr"] == float(best["param_lr"]) and settings["epochs"] == 3 and "name" not in settings
    train = subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", "--config", str(config), "--name", "repro",
                            "--runs-dir", str(runs), "--quiet"], cwd=tmp_path, env=_env(), capture_output=True,
                           text=True, timeout=WAIT_S)
    assert train.returncode == 0, train.stdout + train.stderr
    with open(runs / "repro" / "metrics.csv", newline="") as handle:
        reproduced = max(float(row["val_auc"]) for row in csv.DictReader(handle))
    assert abs(reproduced - float(best["value"])) <= 0.02, (reproduced, best)  # same seed, same CPU: same run


def test_tune_on_ray_with_two_local_workers(tmp_path: Path, synthetic_data: Path) -> None:
    pytest.importorskip("ray.tune")
    runs = tmp_path / "runs"
    ray_tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env = {**_env(), "RAY_TMPDIR": ray_tmp}  # this test's private Ray, started and stopped by tune itself
    try:
        done = subprocess.run(_tune_args(synthetic_data, runs, "--trials", "4", "--epochs", "2", "--engine", "ray",
                                         "--parallel", "2", "--name", "r"),
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=WAIT_S)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "local, 2 workers" in done.stdout
    assert len([line for line in done.stdout.splitlines() if line.startswith("trial ")]) == 4
    rows = _trials(runs / "r")
    assert len(rows) == 4 and {r["state"] for r in rows} <= {"complete", "pruned"}
    assert "complete" in {r["state"] for r in rows}
    assert json.loads((runs / "r" / "best_config.json").read_text())["epochs"] == 2
    assert len(list(runs.glob("r/trial-*/metrics.csv"))) == 4  # every trial a run folder


def test_tune_with_folds_maximises_the_out_of_fold_auc(tmp_path: Path, synthetic_data: Path) -> None:
    runs = tmp_path / "runs"
    done = subprocess.run(_tune_args(synthetic_data, runs, "--trials", "1", "--epochs", "1", "--folds", "2",
                                     "--pruner", "none", "--name", "cvs"),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "objective OOF AUC over 2 folds" in done.stdout
    (row,) = _trials(runs / "cvs")
    cv = json.loads((runs / "cvs" / "trial-000" / "cv.json").read_text())
    assert row["state"] == "complete" and float(row["value"]) == pytest.approx(cv["oof"]["roc_auc"])
    assert int(row["epochs"]) == 2  # one epoch in each of the two folds
