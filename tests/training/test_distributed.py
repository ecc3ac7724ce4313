"""torchrun/DDP on the CPU (gloo, world size 2, 127.0.0.1): equivalence with one process, two "nodes",
resume under torchrun, and a killed rank.

Tolerance of the equivalence check: one epoch of 3 AdamW steps (lr 1e-3, so one step moves a weight by
up to 1e-3); DDP averages gradients over two processes instead of one batch, which changes float
summation order only. We require every weight to agree within 1e-4 (a tenth of one step) and the
epoch's losses and validation metrics within 1e-6. BatchNorm is frozen (--freeze-bn) and augmentation
off (--no-augment): with per-process BatchNorm statistics no DDP run equals a one-process run (that needs
--sync-bn, which PyTorch implements on CUDA only), and augmentation draws from per-process RNG streams.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli
from tests.scratch import scratch_dir
from tests.waits import WAIT_S

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
# fp32 (--no-amp): the check is exactness; bf16 autocast (the default on CPUs with a bf16 unit) rounds differently
# when the batch is split across processes
COMMON = ("--weights", "none", "--batch-size", "8", "--image-size", "32", "--no-augment", "--freeze-bn", "--no-amp",
          "--no-calibrate", "--quiet", "--lr", "1e-3", "--early-stop", "0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def torchrun(*args: str, launcher: tuple[str, ...] | None = None, timeout: float = WAIT_S
             ) -> subprocess.CompletedProcess:
    launcher = launcher or ("--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(free_port()))
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, str(ROOT / "cli.py"), "train", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def metrics(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, synthetic_data: Path) -> dict[str, Path]:
    """The same 1-epoch run alone and under torchrun with 2 processes (global batch 8 = 2 x 4).

    11 validation images: the DistributedSampler pads rank 1's shard with a repeat of image 0, which must
    not count twice.
    """
    work = scratch_dir(request, "ddp")
    data = work / "data"
    shutil.copytree(synthetic_data, data)
    next(iter(sorted((data / "val" / "benign").glob("*.png")))).unlink()
    run_cli("train", "--data", data, *COMMON, "--epochs", "1", "--name", "one",
            "--checkpoint-dir", work / "one", "--runs-dir", work / "runs")
    proc = torchrun("--data", str(data), *COMMON, "--epochs", "1", "--name", "two",
                    "--checkpoint-dir", str(work / "two"), "--runs-dir", str(work / "runs"))
    return {"work": work, "data": data, "one": work / "one", "two": work / "two", "log": proc.stdout + proc.stderr}


def test_one_ddp_epoch_equals_one_process_epoch(runs: dict) -> None:
    one, two = weights(runs["one"] / "last.pt"), weights(runs["two"] / "last.pt")
    assert one.keys() == two.keys()
    diff = max((one[k].double() - two[k].double()).abs().max().item() for k in one if one[k].is_floating_point())
    assert diff <= 1e-4, diff
    m1, m2 = metrics(runs["work"] / "runs" / "one"), metrics(runs["work"] / "runs" / "two")
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_auc"):
        assert m2[0][key] == pytest.approx(m1[0][key], abs=1e-6), key
    # rank 0 alone wrote: one progress report per epoch, one set of files
    assert runs["log"].count("epoch   1/1") == 1 and runs["log"].count("2 processes (gloo)") == 1
    assert "24 train / 11 val images" in runs["log"]  # an odd split: rank 1's shard was padded
    assert sorted(p.name for p in runs["two"].iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in (runs["work"] / "runs" / "two").iterdir()) == [
        "config.json", "metrics.csv", "state.json", "training_curves.png"]
    # the DDP checkpoint is a plain ResNet50 one: it exports with the parity check
    run_cli("export", "--checkpoint", runs["two"] / "best.pt", "--output", runs["work"] / "two.onnx",
            "--data", runs["data"], "--parity-images", "4")
    assert (runs["work"] / "two.onnx").is_file()


def test_two_nodes_resume_under_torchrun(runs: dict) -> None:
    """Two launchers (--nnodes 2, c10d rendezvous on 127.0.0.1) continue the DDP run to epoch 2 and stop."""
    ckpt = runs["work"] / "two-nodes"
    shutil.copytree(runs["two"], ckpt)
    port = free_port()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
           "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "skinonnx-test",
           "--local_addr", "127.0.0.1", str(ROOT / "cli.py"), "train", "--resume", "--epochs", "2",
           "--data", str(runs["data"]), "--checkpoint-dir", str(ckpt), "--runs-dir", str(runs["work"] / "runs"),
           "--quiet"]
    nodes = [subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=WAIT_S)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    log = "".join(outputs)
    assert log.count("resuming run 'two'") == 1 and log.count("epoch   2/2") == 1
    state = torch.load(ckpt / "last.pt", map_location="cpu", weights_only=True)
    assert state["epoch"] == 2 and [int(r["epoch"]) for r in state["history"]] == [1, 2]


def test_killed_rank_makes_the_other_fail_fast(tmp_path: Path, synthetic_data: Path) -> None:
    """SIGKILL rank 1 mid-run: rank 0 stops with one clear error line (bounded by --dist-timeout)."""
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        rank_env = {**env(), "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
                    "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "train", "--data", str(synthetic_data), *COMMON, "--epochs", "50",
             "--dist-timeout", "60", "--checkpoint-dir", str(tmp_path / "ck"), "--runs-dir", str(tmp_path / "runs")],
            cwd=ROOT, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    lines = []
    for line in procs[0].stdout:  # wait until training has started
        lines.append(line)
        if line.startswith("epoch   1/50"):
            break
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    out, _ = procs[0].communicate(timeout=WAIT_S)  # a hang fails here
    out = "".join(lines) + out
    assert procs[0].returncode == 1, out[-3000:]
    error = [line for line in out.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "rank 0 of 2 (gloo)" in error[0] and "another rank died" in error[0], out[-3000:]
    assert "Traceback" not in out
    assert torch.load(tmp_path / "ck" / "last.pt", weights_only=True)["epoch"] >= 1
