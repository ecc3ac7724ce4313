"""How `train` starts: errors before torch and before any folder, nothing left by a failed start, options that
do something (--sync-bn refused where it cannot act, --no-channels-last), two runs at once in two folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from skinonnx.errors import WeightsUnavailableError
from skinonnx.training import loop, model
from skinonnx.training.loop import train_step
from tests.waits import WAIT_S

from ..conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
TINY = ("--weights", "none", "--epochs", "1", "--batch-size", "8", "--image-size", "32", "--quiet")


def _leftovers(runs: Path) -> list[str]:
    return sorted(str(p.relative_to(runs)) for p in runs.rglob("*")) if runs.exists() else []


def test_a_data_error_comes_before_torch_is_imported() -> None:
    code = ("import sys; from skinonnx.cli import main\n"
            "try: main(['train', '--data', '/no/such/path'], standalone_mode=False)\n"
            "except Exception as exc: print(type(exc).__name__, exc)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout.splitlines()
    assert out == ["DataError data path not found: /no/such/path", "False"]


@pytest.mark.parametrize("problem", ["missing", "one-class", "csv-typo"])
def test_failed_starts_leave_no_run_folder(problem: str, synthetic_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    if problem == "one-class":
        (data / "benign").mkdir(parents=True)
        (data / "benign" / "a.png").write_bytes((synthetic_data / "train").glob("*/*.png").__next__().read_bytes())
    elif problem == "csv-typo":
        data = tmp_path / "index.csv"
        data.write_text("path,lable,split\na.png,benign,train\n")
    out = run_cli("train", "--data", data, *TINY, "--runs-dir", tmp_path / "runs", expect=1).output
    assert out.startswith("Error: ") and _leftovers(tmp_path / "runs") == []


def test_a_start_that_fails_after_claiming_its_folder_removes_it(synthetic_data: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "not-resnet.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bogus)  # found, so accepted up front; refused when the model is built
    out = run_cli("train", "--data", synthetic_data, *TINY, "--weights", bogus, "--runs-dir", tmp_path / "runs",
                  expect=1).output
    assert "not a ResNet50 state dict" in out and _leftovers(tmp_path / "runs") == []


def test_offline_imagenet_weights_fail_before_any_image_is_decoded(synthetic_data: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    def offline() -> None:
        raise WeightsUnavailableError("ImageNet weights are not available offline (URLError)")

    def no_decoding(*_args, **_kwargs):
        raise AssertionError("data was decoded before the weights were checked")

    monkeypatch.setattr(model, "imagenet_weights_file", lambda: tmp_path / "absent.pth")
    monkeypatch.setattr(model, "_imagenet_state_dict", offline)
    monkeypatch.setattr(loop, "load_data", no_decoding)
    out = run_cli("train", "--data", synthetic_data, "--weights", "imagenet", "--runs-dir", tmp_path / "runs",
                  "--quiet", expect=1).output
    assert "not available offline" in out and _leftovers(tmp_path / "runs") == []


def test_sync_bn_outside_torchrun_is_refused_before_anything_runs(synthetic_data: Path, tmp_path: Path) -> None:
    out = run_cli("train", "--data", synthetic_data, *TINY, "--sync-bn", "--runs-dir", tmp_path / "runs",
                  expect=1).output
    assert "Error: --sync-bn needs torchrun on CUDA" in out and _leftovers(tmp_path / "runs") == []


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_setting_reaches_the_batches(channels_last: bool) -> None:
    seen: list[bool] = []
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    net[0].register_forward_pre_hook(lambda _m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    train_step(net, torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1]), nn.CrossEntropyLoss(),
               torch.optim.SGD(net.parameters(), lr=0.1), torch.device("cpu"), scaler=torch.amp.GradScaler("cuda",
               enabled=False), amp=False, channels_last=channels_last)
    assert seen == [channels_last]


@pytest.mark.slow
def test_no_channels_last_trains_in_nchw_and_two_runs_started_at_once_get_two_folders(synthetic_data: Path,
                                                                                      tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(REPO / "cli.py"), "train", "--data", str(synthetic_data), *TINY, "--name", "twin",
               "--runs-dir", str(tmp_path / "runs"), "--workers", "0"]
    procs = [subprocess.Popen(command + extra, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for extra in ([], ["--no-channels-last"])]
    outs = [p.communicate(timeout=WAIT_S)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert folders == ["twin", "twin-2"]
    layouts = {json.loads((tmp_path / "runs" / f / "config.json").read_text())["channels_last"] for f in folders}
    assert layouts == {True, False}  # each folder holds one run's settings, not a mix
    assert "(channels_last)" in outs[0] or "channels_last)" in outs[0]
    assert "NCHW)" in outs[1]
