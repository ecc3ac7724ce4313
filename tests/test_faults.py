"""Faults: SIGKILL in the middle of training, checkpointing, export and report writing; a 10,000-file predict.

Kills are real: a child process either gets ``kill -9`` from the test or sends it to itself from inside
a patched step, so no ``finally`` or ``atexit`` code can tidy up. What must hold afterwards: every file
under its final name is a complete old or complete new version, never a half-written one.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from skinonnx.training.checkpoint import load_checkpoint
from tests.waits import WAIT_S

from .badfiles import (
    REPO,
    cli_ok,
    jpeg_bytes,
    make_imagefolder,
    python_subprocess,
    rgb_pattern,
    tiny_onnx,
    write_png_bomb,
    write_tiny_pngs,
)
from .conftest import TrainedModel, run_cli

SELF_KILL = "import os, signal\ndef die(*_a, **_k):\n    os.kill(os.getpid(), signal.SIGKILL)\n"


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


# --- training -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_training_then_resume_finishes_the_run(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "d", {"train": {"benign": 4, "malignant": 4},
                                             "val": {"benign": 2, "malignant": 2}}, size=40)
    ckpt, runs, epochs = tmp_path / "ck", tmp_path / "runs", 3
    args = ["train", "--data", str(data), "--weights", "none", "--epochs", str(epochs), "--image-size", "32",
            "--batch-size", "4", "--checkpoint-dir", str(ckpt), "--runs-dir", str(runs), "--name", "k", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "cli.py", *args], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (ckpt / "last.pt").exists():  # appears (atomically) once epoch 1 is complete
            assert child.poll() is None, child.stdout.read().decode()
            assert time.monotonic() < deadline, "epoch 1 never finished"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=WAIT_S)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"

    last, best = load_checkpoint(ckpt / "last.pt"), load_checkpoint(ckpt / "best.pt")
    killed_at = int(last["epoch"])
    assert 1 <= killed_at < epochs
    assert 1 <= int(best["epoch"]) <= killed_at + 1  # best.pt is written just before last.pt
    assert [h["epoch"] for h in last["history"]] == list(range(1, killed_at + 1))

    output = cli_ok("train", "--resume", "--checkpoint-dir", ckpt, "--quiet")
    assert f"resuming run 'k' from {ckpt / 'last.pt'} (epoch {killed_at} of {epochs})" in output
    final = load_checkpoint(ckpt / "last.pt")
    assert final["epoch"] == epochs
    assert [h["epoch"] for h in final["history"]] == list(range(1, epochs + 1))
    assert final["history"][:killed_at] == last["history"]  # the epochs before the kill are kept as they were
    rows = list(csv.DictReader((runs / "k" / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert "decision" in load_checkpoint(ckpt / "best.pt")  # finalised after the resumed run


def test_kill_9_in_the_middle_of_a_checkpoint_write_keeps_the_previous_one(tmp_path: Path) -> None:
    target = tmp_path / "last.pt"
    code = SELF_KILL + (
        "import sys, torch\nfrom pathlib import Path\nimport skinonnx.training.checkpoint as c\n"
        "state = lambda e: {'model': {'w': torch.full((256, 256), float(e))}, 'classes': ['benign', 'malignant'],"
        " 'positive_index': 1, 'preprocessing': {}, 'epoch': e}\n"
        "c.save_checkpoint(state(1), sys.argv[1])\n"
        "real = torch.save\n"
        "def half_then_die(obj, path):\n"
        "    real(obj, path)\n"
        "    Path(path).write_bytes(Path(path).read_bytes()[:5000])\n"
        "    die()\n"
        "c.torch.save = half_then_die\n"
        "c.save_checkpoint(state(2), sys.argv[1])\n")
    run = python_subprocess(code, str(target))
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert load_checkpoint(target)["epoch"] == 1
    leftovers = _temp_files(tmp_path)
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 5000  # the half-written new one, never renamed


# --- export and reports -------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_export_leaves_no_model_under_the_final_name(trained: TrainedModel, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "model.onnx"
    code = SELF_KILL + (
        "import sys\nimport skinonnx.export.onnx_export as e\ne.check_parity = die\n"
        "from skinonnx.cli import main\nmain(sys.argv[1:])\n")
    run = python_subprocess(code, "export", "--checkpoint", str(trained.checkpoint), "-o", str(out),
                            "--data", str(trained.data), "--parity-images", "2")
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
    assert "ONNX checker and shape inference: ok" in run.stdout  # killed after the graph was written
    assert not out.exists()
    leftovers = _temp_files(out.parent)
    assert len(leftovers) == 1 and leftovers[0].stat().st_size > 1_000_000  # the complete-but-unchecked temp


@pytest.mark.parametrize("command", ["predict", "test"])
def test_kill_9_while_writing_a_report_keeps_the_old_one(tmp_path: Path, command: str) -> None:
    """Killed after the new report is written and flushed, just before the rename: the old one stays."""
    model = tiny_onnx(tmp_path / "m.onnx")
    data = make_imagefolder(tmp_path / "d", {"test": {"benign": 2, "malignant": 2}})
    report = tmp_path / "report"
    report.mkdir()
    final = report / "predictions.csv"
    final.write_text("old,report\n")
    args = (["predict", "--onnx", str(model), str(data / "test"), "-o", str(final)] if command == "predict" else
            ["test", "--onnx", str(model), "--data", str(data), "--output", str(report)])
    # die at the report's rename (predict's resumable part files in predictions.csv.parts/ are renamed before)
    code = SELF_KILL + ("import sys\nimport skinonnx.atomic as a\nreal = a.os.replace\n"
                        "a.os.replace = lambda s, d: die() if str(d).endswith('predictions.csv') else real(s, d)\n"
                        "from skinonnx.cli import main\nmain(sys.argv[1:])\n")
    run = python_subprocess(code, *args, "--quiet", "--provider", "cpu")
    assert run.returncode == -signal.SIGKILL, run.stdout + run.stderr
    assert final.read_text() == "old,report\n"
    leftovers = _temp_files(report)
    assert len(leftovers) == 1 and leftovers[0].read_text().startswith("path,")  # the complete new report


# --- 10,000 files, some bad -----------------------------------------------------------------------


def test_predict_10000_files_with_bad_ones_finishes_and_lists_them(tmp_path: Path) -> None:
    folder = tmp_path / "inbox"
    prototypes = write_tiny_pngs(tmp_path / "proto", 25, size=16)
    bad_protos = tmp_path / "bad"
    bad_protos.mkdir()
    (bad_protos / "empty.png").write_bytes(b"")
    (bad_protos / "html.png").write_text("<html>forbidden</html>")
    data = jpeg_bytes(rgb_pattern(32, 32))
    (bad_protos / "half.jpg").write_bytes(data[: len(data) // 3])
    rgb_pattern(1, 1).save(bad_protos / "pixel.png")
    write_png_bomb(bad_protos / "bomb.png", side=20000)
    reasons = {"empty.png": "empty file", "html.png": "not a supported image", "half.jpg": "truncated",
               "pixel.png": "at least 8x8", "bomb.png": "exceeds the limit"}
    folder.mkdir()
    expected_bad: dict[str, str] = {}
    n_total, n_bad_each = 10_000, 9
    n_good = n_total - n_bad_each * len(reasons)
    for i in range(n_good):  # hard links: 10,000 directory entries, 25 files' worth of disk
        os.link(prototypes[i % len(prototypes)], folder / f"good_{i:05d}.png")
    for name, reason in reasons.items():
        for k in range(n_bad_each):
            path = folder / f"bad_{k}_{name}"
            os.link(bad_protos / name, path)
            expected_bad[str(path)] = reason
    out = tmp_path / "predictions.csv"
    result = run_cli("predict", "--onnx", tiny_onnx(tmp_path / "m.onnx", image_size=16), folder, "-o", out,
                     "--batch-size", "256", "--provider", "cpu", "--quiet")
    assert "Traceback" not in result.output
    assert f"{n_good} images classified" in result.output and f"{len(expected_bad)} skipped" in result.output
    assert f"... {len(expected_bad) - 20} more skipped; see {out}" in result.output
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) == n_total
    errors = {r["path"]: r["error"] for r in rows if r["error"]}
    assert set(errors) == set(expected_bad)
    for path, reason in expected_bad.items():
        assert reason in errors[path]
    good = [r for r in rows if not r["error"]]
    assert len(good) == n_good and all(r["prediction"] in ("benign", "malignant") for r in good)
    # hard links of one file get one probability: results follow the pixels, not the position in the batch
    by_proto: dict[int, set[str]] = {}
    for r in good:
        by_proto.setdefault(int(Path(r["path"]).stem.split("_")[1]) % len(prototypes), set()).add(r["p_malignant"])
    assert all(len(v) == 1 for v in by_proto.values()) and len({next(iter(v)) for v in by_proto.values()}) > 1


def test_resume_without_a_completed_epoch_says_so(tmp_path: Path) -> None:
    """A run killed before its first epoch finished has no last.pt: resume says what to do."""
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    (ckpt / ".last.pt.abc123.tmp").write_bytes(torch.zeros(3).numpy().tobytes())  # what a kill leaves
    result = run_cli("train", "--resume", "--checkpoint-dir", ckpt, expect=1)
    assert "Traceback" not in result.output
    assert f"checkpoint not found: {ckpt / 'last.pt'}" in result.output


def test_atomic_writes_get_normal_file_permissions(tmp_path: Path) -> None:
    """mkstemp's 0600 must not leak into results that others (a web server, a colleague) need to read."""
    from skinonnx.atomic import write_text

    mask = os.umask(0o022)
    try:
        target = write_text(tmp_path / "report.txt", "x")
    finally:
        os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o644
