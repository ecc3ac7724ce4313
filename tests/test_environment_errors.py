"""The environment fights back: unwritable outputs, a full disk, a missing GPU provider, invalid options."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from .badfiles import (
    cli_error,
    cli_ok,
    make_imagefolder,
    python_subprocess,
    rgb_pattern,
    tiny_onnx,
    unprivileged_prefix,
    write_tiny_pngs,
)
from .conftest import TrainedModel, run_cli

TWO = {"benign": 2, "malignant": 2}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    write_tiny_pngs(tmp_path / "imgs", 3, size=24)
    return tmp_path / "imgs"


def _leftover_temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp") or "write-test" in p.name]


# --- output not writable ------------------------------------------------------------------------


def test_predict_output_under_a_file_fails_before_any_work(tmp_path: Path, images: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = run_cli("predict", "--onnx", tiny_onnx(tmp_path / "m.onnx"), images, "-o",
                     tmp_path / "blocker" / "out.csv", expect=1)
    assert "Traceback" not in result.output
    assert f"Error: cannot write {tmp_path / 'blocker'}: a file is in the way of a folder" in result.output
    assert "on ONNX Runtime" not in result.output  # refused before the model was even opened


def test_test_report_folder_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    data = make_imagefolder(tmp_path / "d", {"test": TWO})
    cli_error("test", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--data", data, "--out", tmp_path / "blocker" / "r",
              says=("cannot write", "a file is in the way"))


def test_export_output_under_a_file_fails_before_loading(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    (tmp_path / "junk.pt").write_text("not even a checkpoint: the write check comes first")
    cli_error("export", "--checkpoint", tmp_path / "junk.pt", "-o", tmp_path / "blocker" / "m.onnx",
              says=("cannot write", "blocker"))


def test_train_checkpoint_dir_under_a_file_fails_before_training(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    data = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO})
    cli_error("train", "--data", data, "--weights", "none", "--epochs", "1", "--image-size", "32",
              "--checkpoint-dir", tmp_path / "blocker" / "ck", "--runs-dir", tmp_path / "runs", "--quiet",
              says=("cannot write", "blocker"))
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.csv"))


def test_read_only_output_folder_as_an_unprivileged_user() -> None:
    """Real permissions: root drops to 'nobody' (root ignores modes); the folder is mode 0555."""
    prefix = unprivileged_prefix()
    if prefix is None:
        pytest.skip("running as root without setpriv: cannot test real permissions")
    base = Path(tempfile.mkdtemp(prefix="skinonnx-ro-"))
    try:
        base.chmod(0o755)
        rgb_pattern().save(base / "a.png")
        model = tiny_onnx(base / "m.onnx")
        locked = base / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        data = make_imagefolder(base / "d", {"test": TWO})
        for p in [base / "a.png", model, *data.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        code = "import sys\nfrom skinonnx.cli import main\nmain(sys.argv[1:])"
        runs = {
            "predict": ["predict", "--onnx", str(model), str(base / "a.png"), "-o", str(locked / "p.csv")],
            "test": ["test", "--onnx", str(model), "--data", str(data), "--out", str(locked / "report")],
        }
        for name, args in runs.items():
            run = python_subprocess(code, *args, "--quiet", user_prefix=prefix)
            assert run.returncode == 1, (name, run.stdout, run.stderr)
            assert "Traceback" not in run.stderr
            assert "permission denied" in run.stderr, (name, run.stderr)
        assert list(locked.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- disk full (simulated: the OS says ENOSPC) --------------------------------------------------


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _half_then_enospc(path: Path, data: bytes) -> None:
    Path(path).write_bytes(data[: len(data) // 2])
    _enospc()


@pytest.mark.parametrize("where", ["during write", "at fsync"])
def test_disk_full_writing_predictions_keeps_the_old_file(tmp_path: Path, images: Path, monkeypatch,
                                                           where: str) -> None:
    import skinonnx.atomic as atomic

    out = tmp_path / "results" / "pred.csv"
    out.parent.mkdir()
    out.write_text("path,prediction\nold.png,benign\n")
    if where == "at fsync":
        monkeypatch.setattr(atomic.os, "fsync", _enospc)
    else:
        import skinonnx.deploy.predict as predict

        def write_half(final, text):
            return atomic.write_with(final, lambda tmp: _half_then_enospc(tmp, text.encode()))

        monkeypatch.setattr(predict, "write_text", write_half)
    # at fsync, the first write to fail is the resumable job's bookkeeping (pred.csv.parts/job.json)
    says = (f"cannot write {out}: disk full",) if where != "at fsync" else (f"cannot write {out}", "disk full")
    cli_error("predict", "--onnx", tiny_onnx(tmp_path / "m.onnx"), images, "-o", out, "--quiet", says=says)
    assert out.read_text() == "path,prediction\nold.png,benign\n"
    assert _leftover_temp_files(tmp_path / "results") == []


def test_disk_full_writing_the_test_report(tmp_path: Path, monkeypatch) -> None:
    import skinonnx.atomic as atomic

    data = make_imagefolder(tmp_path / "d", {"test": TWO})
    out = tmp_path / "report"
    out.mkdir()
    (out / "predictions.csv").write_text("previous report\n")
    monkeypatch.setattr(atomic.os, "fsync", _enospc)
    cli_error("test", "--onnx", tiny_onnx(tmp_path / "m.onnx"), "--data", data, "--out", out, "--quiet",
              says=("predictions.csv: disk full",))
    assert (out / "predictions.csv").read_text() == "previous report\n"
    assert _leftover_temp_files(out) == []


@pytest.mark.slow
def test_disk_full_writing_a_checkpoint_keeps_the_previous_one(tmp_path: Path, monkeypatch) -> None:
    """The first checkpoint save of a real run hits ENOSPC half-way: clear error, old files untouched."""
    import skinonnx.training.checkpoint as checkpoint

    data = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO})
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    for name in ("best.pt", "last.pt"):
        (ckpt / name).write_bytes(b"previous run " + name.encode())
    real_save = checkpoint.torch.save

    def save_half(obj, path):
        real_save(obj, path)
        Path(path).write_bytes(Path(path).read_bytes()[:1000])
        _enospc()

    monkeypatch.setattr(checkpoint.torch, "save", save_half)
    cli_error("train", "--data", data, "--weights", "none", "--epochs", "1", "--image-size", "32",
              "--batch-size", "4", "--checkpoint-dir", ckpt, "--runs-dir", tmp_path / "runs", "--quiet",
              says=(f"cannot write {ckpt / 'best.pt'}: disk full",))
    assert (ckpt / "best.pt").read_bytes() == b"previous run best.pt"
    assert (ckpt / "last.pt").read_bytes() == b"previous run last.pt"
    assert _leftover_temp_files(ckpt) == []


@pytest.mark.slow
def test_disk_full_during_export_keeps_the_previous_model(trained: TrainedModel, tmp_path: Path,
                                                           monkeypatch) -> None:
    import onnx

    out = tmp_path / "exports" / "model.onnx"
    out.parent.mkdir()
    out.write_bytes(b"previous model")
    monkeypatch.setattr(onnx, "save", lambda proto, path: _half_then_enospc(Path(path), proto.SerializeToString()))
    cli_error("export", "--checkpoint", trained.checkpoint, "-o", out, "--data", trained.data,
              "--parity-images", "2", says=(f"cannot write {out}: disk full",))
    assert out.read_bytes() == b"previous model"
    assert _leftover_temp_files(out.parent) == []


# --- providers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_unavailable_provider_is_an_error_not_a_silent_cpu_fallback(tmp_path: Path, images: Path,
                                                                     provider: str) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    result = run_cli("predict", "--onnx", model, images, "-o", tmp_path / "p.csv", "--provider", provider,
                     "--quiet", expect=None)
    assert "Traceback" not in result.output and "EP Error" not in result.output and "****" not in result.output
    wanted = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}[provider]
    if result.exit_code == 0:  # a machine where the provider really works: it must be the one used
        assert f"on ONNX Runtime {wanted}" in result.output
        return
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"provider '{provider}'" in errors[0] and "--provider cpu" in errors[0]
    assert not (tmp_path / "p.csv").exists()


def test_train_on_cuda_without_a_gpu(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    data = make_imagefolder(tmp_path / "d", {"train": TWO, "val": TWO})
    cli_error("train", "--data", data, "--device", "cuda", "--weights", "none", "--checkpoint-dir", tmp_path / "ck",
              "--runs-dir", tmp_path / "runs", says=("--device cuda requested but no CUDA GPU",))


# --- invalid options (Click validation: exit 2, names the option) -------------------------------

TRAIN = ("train", "--data", "unused", "--weights", "none")
INVALID: list[tuple[tuple[str, ...], str]] = [
    ((*TRAIN, "--batch-size", "0"), "'--batch-size': 0 is not in the range x>=1"),
    ((*TRAIN, "--epochs", "0"), "'--epochs'"),
    ((*TRAIN, "--epochs", "three"), "'three' is not a valid integer"),
    ((*TRAIN, "--lr", "0"), "'--lr'"),
    ((*TRAIN, "--lr", "-1e-3"), "'--lr'"),
    ((*TRAIN, "--weight-decay", "-1"), "'--weight-decay'"),
    ((*TRAIN, "--image-size", "8"), "'--image-size'"),
    ((*TRAIN, "--early-stop", "-1"), "'--early-stop'"),
    ((*TRAIN, "--optimizer", "rmsprop"), "'--optimizer'"),
    ((*TRAIN, "--scheduler", "step"), "'--scheduler'"),
    ((*TRAIN, "--select", "f1"), "'--select'"),
    ((*TRAIN, "--device", "tpu"), "'--device'"),
    ((*TRAIN, "--workers", "-1"), "'--workers'"),
    ((*TRAIN, "--cache-mb", "-5"), "'--cache-mb'"),
    ((*TRAIN, "--max-pixels", "0"), "'--max-pixels'"),
    ((*TRAIN, "--threshold-policy", "sensitivity:2"), "--threshold-policy: invalid threshold policy"),
    ((*TRAIN, "--threshold-policy", "magic"), "unknown policy 'magic'"),
    (("export", "--opset", "5"), "'--opset'"),
    (("export", "--atol", "0"), "'--atol'"),
    (("export", "--parity-images", "0"), "'--parity-images'"),
    (("parity", "--images", "0"), "'--images'"),
    (("test", "--batch-size", "0"), "'--batch-size'"),
    (("test", "--split", "holdout"), "'--split'"),
    (("test", "--threshold", "1.5"), "'--threshold'"),
    (("test", "--provider", "npu"), "'--provider'"),
    (("test", "--image-size", "4"), "'--image-size'"),
    (("predict", "x.png", "--batch-size", "0"), "'--batch-size'"),
    (("predict", "x.png", "--threshold", "-0.1"), "'--threshold'"),
    (("predict", "x.png", "--max-pixels", "-1"), "'--max-pixels'"),
    (("predict", "x.png", "-o", "results.txt"), "must end in .csv, .json or .parquet"),
    (("predict",), "Missing argument 'INPUTS"),
    (("predict", "x.png", "--no-such-option"), "No such option '--no-such-option'"),
    (("demo", "--epochs", "0"), "'--epochs'"),
    (("frobnicate",), "No such command 'frobnicate'"),
]


@pytest.mark.parametrize(("args", "says"), INVALID, ids=[" ".join(a[:1] + a[-2:]) for a, _ in INVALID])
def test_invalid_option_is_a_usage_error(args: tuple[str, ...], says: str) -> None:
    cli_error(*args, code=2, says=(says,))


def test_export_output_must_be_onnx(tmp_path: Path) -> None:
    cli_error("export", "--checkpoint", tmp_path / "x.pt", "-o", tmp_path / "model.pt",
              says=("--output must end in .onnx",))


def test_predict_on_nothing_usable(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    (tmp_path / "empty").mkdir()
    cli_error("predict", "--onnx", model, tmp_path / "empty", "-o", tmp_path / "p.csv", says=("no images found in",))
    (tmp_path / "bad.jpg").write_text("<html>")
    cli_error("predict", "--onnx", model, tmp_path / "bad.jpg", str(tmp_path / "*.png"), "-o", tmp_path / "p.csv",
              says=("none of the 2 inputs could be classified",))
    rows = {r["path"]: r["error"] for r in csv.DictReader((tmp_path / "p.csv").read_text().splitlines())}
    assert rows == {str(tmp_path / "*.png"): "glob matched no images",
                    str(tmp_path / "bad.jpg"): "not a supported image (JPEG, PNG, BMP, TIFF or WebP)"}


def test_predict_missing_input_path_is_an_error_even_next_to_a_valid_one(tmp_path: Path, images: Path) -> None:
    """Before: `predict missing.jpg` said "no images found" and a mistyped folder beside a good one exited 0."""
    model = tiny_onnx(tmp_path / "m.onnx")
    cli_error("predict", "--onnx", model, tmp_path / "missing.jpg", "-o", tmp_path / "p.csv",
              says=(f"not found: {tmp_path / 'missing.jpg'}",))
    cli_error("predict", "--onnx", model, images, tmp_path / "imgs_typo", tmp_path / "gone.png", "-o",
              tmp_path / "p.csv", says=(f"not found: {tmp_path / 'imgs_typo'}, {tmp_path / 'gone.png'}",))
    assert not (tmp_path / "p.csv").exists()  # refused before any work


def test_no_write_probe_files_are_left_behind(tmp_path: Path, images: Path) -> None:
    out = tmp_path / "out"
    cli_ok("predict", "--onnx", tiny_onnx(tmp_path / "m.onnx"), images, "-o", out / "p.csv", "--quiet")
    assert sorted(os.listdir(out)) == ["p.csv"]
