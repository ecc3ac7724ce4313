"""Run folders (runs/<name>/weights/...), resolving runs, --config files, the ETA and the Ctrl-C message.

No network is trained here: run folders are made by hand the way `train` lays them out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from skinonnx.errors import CheckpointError, RunInterrupted, SkinOnnxError
from skinonnx.training import runs
from skinonnx.training.config import read_config_file
from skinonnx.training.epoch_report import format_duration, run_eta


def _run(root: Path, name: str, *, best: bool = True, last: bool = True, status: str | None = "finished",
         age: float = 0.0) -> Path:
    run = root / name
    (run / "weights").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"name": name}))
    for present, file in ((best, "best.pt"), (last, "last.pt")):
        if present:
            (run / "weights" / file).write_bytes(b"x")
    if status:
        runs.write_status(run, status, 1, 2)
    stamp = time.time() - age
    for path in (run / "weights" / "last.pt", run / "config.json"):
        if path.exists():
            os.utime(path, (stamp, stamp))
    return run


def test_newest_run_is_the_most_recently_written_one_with_best_pt(tmp_path: Path) -> None:
    old = _run(tmp_path, "old", age=100)
    new = _run(tmp_path, "new", age=10)
    _run(tmp_path, "newest-but-no-best", best=False, age=1)
    assert runs.list_runs(tmp_path)[:2] == [tmp_path / "newest-but-no-best", new]
    assert runs.newest_run(tmp_path) == new
    path, note = runs.resolve_checkpoint(None, tmp_path)
    assert path == new / "weights" / "best.pt" and "the newest run" in note and str(path) in note
    assert runs.resolve_checkpoint("old", tmp_path)[0] == old / "weights" / "best.pt"  # by name
    assert runs.resolve_checkpoint(str(old), tmp_path)[0] == old / "weights" / "best.pt"  # by folder
    given = old / "weights" / "best.pt"
    assert runs.resolve_checkpoint(str(given), tmp_path) == (given, None)  # a file stays as given


def test_a_cross_validation_run_does_not_break_newest_run(tmp_path: Path) -> None:
    single = _run(tmp_path, "single", age=50)
    cv = tmp_path / "cv5"
    (cv / "fold-0" / "weights").mkdir(parents=True)
    (cv / "fold-0" / "weights" / "best.pt").write_bytes(b"x")
    (cv / "cv.json").write_text("{}")
    assert cv in runs.list_runs(tmp_path)
    assert runs.newest_run(tmp_path) == single  # no top-level weights: skipped where one model is needed
    with pytest.raises(CheckpointError, match="no unfinished run"):
        runs.newest_unfinished_run(tmp_path)


def test_no_run_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"no run with weights/best.pt under .*train one first"):
        runs.newest_run(tmp_path / "runs")
    _run(tmp_path, "a")
    with pytest.raises(CheckpointError, match=r"no run 'b' .*runs there, newest first: a"):
        runs.resolve_run("b", tmp_path)


def test_resume_default_is_the_newest_unfinished_run(tmp_path: Path) -> None:
    _run(tmp_path, "finished-newest", status="finished", age=1)
    interrupted = _run(tmp_path, "interrupted", status="interrupted", age=20)
    _run(tmp_path, "killed-older", status="running", age=40)  # kill -9 leaves "running"
    assert runs.newest_unfinished_run(tmp_path) == interrupted


def test_a_taken_name_gets_a_suffix_instead_of_overwriting(tmp_path: Path) -> None:
    assert runs.claim_run_dir(tmp_path, "exp") == tmp_path / "exp"
    assert runs.claim_run_dir(tmp_path, "exp") == tmp_path / "exp-2"  # taken from its claim on, not its 1st epoch
    _run(tmp_path, "done")
    assert runs.claim_run_dir(tmp_path, "done") == tmp_path / "done-2"


def test_runs_started_at_once_never_share_a_folder(tmp_path: Path) -> None:
    """16 threads claim one name (as two time-stamp names in the same second would): 16 distinct folders."""
    with ThreadPoolExecutor(16) as pool:
        claimed = list(pool.map(lambda _: runs.claim_run_dir(tmp_path, "20261203-120000"), range(16)))
    assert len(set(claimed)) == 16 and all(p.is_dir() for p in claimed)
    assert {p.name for p in claimed} == {"20261203-120000", *(f"20261203-120000-{k}" for k in range(2, 17))}


def test_a_running_state_whose_process_is_gone_reads_interrupted(tmp_path: Path) -> None:
    dead = _run(tmp_path, "dead", status="running", age=10)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its pid is now free: the process that "wrote" the state is gone
    state = json.loads((dead / "state.json").read_text())
    (dead / "state.json").write_text(json.dumps({**state, "pid": child.pid}))
    assert runs.run_status(dead)["status"] == "interrupted"
    assert runs.newest_unfinished_run(tmp_path) == dead  # --resume picks it
    live = _run(tmp_path, "live", status="running", age=1)  # this test's own pid: still training
    assert runs.run_status(live)["status"] == "running" and runs.newest_unfinished_run(tmp_path) == dead


def test_interrupt_message_names_the_exact_command() -> None:
    exc = RunInterrupted(Path("runs/exp"), 3, 15, True)
    assert exc.exit_code == 130
    assert exc.text("python cli.py") == ("interrupted after epoch 3 of 15; it is saved in runs/exp. "
                                         "Continue with: python cli.py train --resume runs/exp")
    legacy = RunInterrupted(Path("runs/exp"), 3, 15, True, checkpoint_dir="ck")
    assert legacy.text("skinonnx").endswith("skinonnx train --resume --checkpoint-dir ck")
    assert "nothing to resume" in RunInterrupted(Path("runs/x"), 0, 15, False).message


def test_eta_covers_the_whole_run() -> None:
    assert run_eta([10.0, 14.0], 5) == "run ETA 1m00s (5 epochs left at 12.0 s/epoch)"
    assert run_eta([10.0], 0) == "run ETA 0m00s"
    assert format_duration(3 * 3600 + 125) == "3h02m"


def test_config_file_json_and_yaml(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"lr": 0.01, "epochs": 3}')
    assert read_config_file(tmp_path / "c.json") == {"lr": 0.01, "epochs": 3}
    pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text("lr: 0.01\nsampler: balanced\n")
    assert read_config_file(tmp_path / "c.yaml") == {"lr": 0.01, "sampler": "balanced"}
    (tmp_path / "bad.yaml").write_text("lr: [1,\n")
    with pytest.raises(SkinOnnxError, match="not valid YAML"):
        read_config_file(tmp_path / "bad.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(SkinOnnxError, match="expected a mapping"):
        read_config_file(tmp_path / "list.json")


def test_one_clock_for_every_default_run(tmp_path: Path) -> None:
    """export, parity and explain take the same default run: a newer CV run is not skipped for an older single
    run (explain and parity name the fold to take instead)."""
    _run(tmp_path, "single", age=50)
    cv = tmp_path / "cv5"
    (cv / "fold-0" / "weights").mkdir(parents=True)
    (cv / "fold-0" / "weights" / "best.pt").write_bytes(b"x")
    (cv / "cv.json").write_text("{}")
    assert runs.default_model_run(tmp_path) == cv
    with pytest.raises(CheckpointError, match=r"cv5 is a cross-validation run.*--checkpoint .*fold-0"):
        runs.resolve_checkpoint(None, tmp_path)
    newer = _run(tmp_path, "newer", age=0)
    os.utime(cv / "cv.json", (time.time() - 20, time.time() - 20))
    assert runs.default_model_run(tmp_path) == newer
    assert runs.resolve_checkpoint(None, tmp_path)[0] == newer / "weights" / "best.pt"
