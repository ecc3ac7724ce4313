"""Run folders end to end: runs don't overwrite each other, later commands take the newest run and say so,
best.pt is slim, --config round-trips, --resume takes a run, Ctrl-C exits 130 naming the command to continue."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skinonnx.training.checkpoint import RESUME_ONLY_KEYS, load_checkpoint
from tests.scratch import scratch_dir
from tests.waits import POLL_S, WAIT_S

from ..conftest import TrainedModel, run_cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_a_run_folder_holds_weights_metrics_config_curves_and_state(trained: TrainedModel) -> None:
    run = trained.run_dir
    assert trained.checkpoint == run / "weights" / "best.pt" and trained.last == run / "weights" / "last.pt"
    assert {p.name for p in run.iterdir()} >= {"weights", "metrics.csv", "config.json", "training_curves.png",
                                              "state.json"}
    state = json.loads((run / "state.json").read_text())
    assert state == {"status": "finished", "epoch": 2, "epochs": 2, "pid": os.getpid(), "host": socket.gethostname()}
    assert (run / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_best_pt_is_slim_and_last_pt_can_resume(trained: TrainedModel) -> None:
    best, last = load_checkpoint(trained.checkpoint), load_checkpoint(trained.last)
    assert not set(RESUME_ONLY_KEYS) & set(best) and set(RESUME_ONLY_KEYS) <= set(last)
    assert {"model", "classes", "preprocessing", "calibration", "decision", "config", "data_root"} <= set(best)
    # AdamW keeps two more copies of the weights: last.pt is about three times best.pt
    assert trained.last.stat().st_size > 2.5 * trained.checkpoint.stat().st_size


@pytest.fixture(scope="module")
def second_run(trained: TrainedModel, request: pytest.FixtureRequest) -> Path:
    """A second run named like the first (its config.json passed back with --config, --epochs overridden)."""
    work = scratch_dir(request, "second")
    (work / "runs").mkdir()
    (work / "runs" / "t").symlink_to(trained.run_dir, target_is_directory=True)
    cwd = os.getcwd()
    os.chdir(work)
    try:
        out = run_cli("train", "--config", trained.run_dir / "config.json", "--epochs", "1", "--runs-dir", "runs",
                      "--quiet").output
    finally:
        os.chdir(cwd)
    assert "note: runs/t already holds a run; this one is runs/t-2" in out
    return work


def test_config_file_round_trips_and_the_command_line_wins(trained: TrainedModel, second_run: Path) -> None:
    first = json.loads((trained.run_dir / "config.json").read_text())
    again = json.loads((second_run / "runs" / "t-2" / "config.json").read_text())
    assert again["epochs"] == 1 and first["epochs"] == 2  # given on the command line
    same = ("lr", "image_size", "batch_size", "weights", "data", "scheduler", "class_weights", "sampler")
    assert {k: again[k] for k in same} == {k: first[k] for k in same}
    assert (trained.run_dir / "weights" / "best.pt").is_file()  # the first run was not overwritten


def test_export_explain_and_test_take_the_newest_run_and_say_which(trained: TrainedModel, second_run: Path,
                                                                  monkeypatch) -> None:
    monkeypatch.chdir(second_run)
    exported = run_cli("export", "-o", "exports/model.onnx", "--parity-images", "2").output
    assert "checkpoint: runs/t-2/weights/best.pt (the newest finished run; --checkpoint to choose another)" in exported
    image = sorted((trained.data / "test" / "malignant").glob("*.png"))[0]
    explained = run_cli("explain", image, "--out", "gc", "--quiet", expect=1).output  # 32 px: no grid at all
    assert "checkpoint: runs/t-2/weights/best.pt (the newest run" in explained
    tested = run_cli("test", "--onnx", trained.onnx, "--out", "r", "--no-ci", "--no-plots", "--quiet",
                     "--provider", "cpu").output
    assert f"model from run {trained.run_dir.resolve()}" in tested
    assert "note: the newest run is runs/t-2" in tested


def test_resume_takes_a_run_by_name(second_run: Path, monkeypatch) -> None:
    monkeypatch.chdir(second_run)
    out = run_cli("train", "--resume", "t-2", "--epochs", "2", "--quiet").output
    assert "resuming run 't-2' from runs/t-2/weights/last.pt (epoch 1 of 2)" in out
    assert load_checkpoint(second_run / "runs" / "t-2" / "weights" / "last.pt")["epoch"] == 2


def _train_until_an_epoch_then(sig: signal.Signals, data: Path, tmp_path: Path) -> tuple[int, str, Path]:
    """Start a long `train` in a subprocess, send ``sig`` once its first epoch is saved; (exit code, stderr, run)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, str(REPO / "cli.py"), "train", "--data", str(data),
                             "--weights", "none", "--epochs", "50", "--early-stop", "0", "--batch-size", "8",
                             "--image-size", "32", "--name", "k", "--runs-dir", str(runs), "--quiet"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + WAIT_S  # waits on the event: metrics.csv written
    while not (runs / "k" / "metrics.csv").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(POLL_S)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=WAIT_S)  # waits on the event: the process exits
    return proc.returncode, out + err, runs / "k"


def test_ctrl_c_exits_130_naming_the_command_that_continues(synthetic_data: Path, tmp_path: Path) -> None:
    code, err, run = _train_until_an_epoch_then(signal.SIGINT, synthetic_data, tmp_path)
    assert code == 130, err
    status = json.loads((run / "state.json").read_text())
    assert status["status"] == "interrupted" and status["epoch"] >= 1
    assert (f"Error: interrupted after epoch {status['epoch']} of 50; it is saved in {run}. "
            f"Continue with: python cli.py train --resume {run}") in err
    assert "Traceback" not in err
    # a plain --resume picks this run (the newest unfinished one) and says so
    resumed = run_cli("train", "--resume", "--runs-dir", run.parent, "--epochs", str(status["epoch"] + 1),
                      "--quiet").output
    assert f"continuing the newest unfinished run, {run}" in resumed
    assert json.loads((run / "state.json").read_text())["status"] == "finished"


def test_sigterm_stops_like_ctrl_c_and_the_unfinished_run_is_exported_only_when_named(
        synthetic_data: Path, tmp_path: Path, monkeypatch) -> None:
    # issue 29 item 10: SIGTERM exited 143 with no message and state.json left `running`
    code, err, run = _train_until_an_epoch_then(signal.SIGTERM, synthetic_data, tmp_path)
    assert code == 143, err
    status = json.loads((run / "state.json").read_text())
    assert status["status"] == "interrupted" and status["epoch"] >= 1
    assert (f"Error: terminated (SIGTERM) after epoch {status['epoch']} of 50; it is saved in {run}. "
            f"Continue with: python cli.py train --resume {run}") in err and "Traceback" not in err
    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == status["epoch"]
    # issue 29 item 3: the newest run is interrupted -> `export` refuses to take it unnamed...
    monkeypatch.chdir(tmp_path)
    refused = run_cli("export", "-o", "m.onnx", expect=1).output
    assert "no finished run under runs/: k (interrupted at epoch" in refused and "--checkpoint k" in refused
    assert not (tmp_path / "m.onnx").exists()
    # ...and named, it is exported as it is, with a warning saying what was skipped
    out = run_cli("export", "--checkpoint", "k", "-o", "m.onnx", "--parity-images", "2").output
    assert (f"warning: exporting runs/k/weights/best.pt as it is: its run k interrupted at epoch {status['epoch']} "
            "of 50, before the steps after training: no temperature scaling") in out
    assert "threshold policy `youden` (the fixed threshold 0.5 instead)" in out
    run_cli("test", "--onnx", "m.onnx", "--output", "r", "--no-ci", "--no-plots", "--no-html", "--quiet")
    card = (tmp_path / "r" / "MODEL_CARD.md").read_text()
    after = next(line for line in card.splitlines() if line.startswith("| After training"))
    assert "**not done**: its run k interrupted" in after and "temperature scaling on" not in after
