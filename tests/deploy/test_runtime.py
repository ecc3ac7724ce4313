"""Deployment path: no torch, explicit providers, no silent CPU fallback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skinonnx.deploy.runtime import create_session
from skinonnx.errors import ProviderError
from tests.waits import WAIT_S

from ..conftest import TrainedModel, run_cli

ROOT = Path(__file__).resolve().parents[2]


def test_test_and_predict_run_with_torch_unimportable(trained: TrainedModel, tmp_path: Path) -> None:
    """A deploy machine has no torch: block its import and run the real commands."""
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:                       # behaves as if torch were not installed
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "torchvision"):
                    raise ImportError(f"No module named {{name!r}} (blocked by the test)")

        sys.meta_path.insert(0, NoTorch())
        from skinonnx.cli import main
        for args in (["test", "--onnx", r"{trained.onnx}", "--data", r"{trained.data}", "--output", r"{tmp_path / 'r'}",
                      "--provider", "cpu", "--quiet"],
                     ["predict", "--onnx", r"{trained.onnx}", r"{trained.data / 'test'}", "-o",
                      r"{tmp_path / 'p.csv'}", "--provider", "cpu", "--quiet"]):
            try:
                main(args, standalone_mode=False)
            except SystemExit as exc:
                assert not exc.code, exc.code
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")], "torch got imported"
        print("NO-TORCH-OK")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=WAIT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "NO-TORCH-OK" in proc.stdout
    assert (tmp_path / "r" / "summary.json").is_file() and (tmp_path / "p.csv").is_file()


def test_cuda_requested_without_gpu_is_an_error_not_a_cpu_run(trained: TrainedModel) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            _, used = create_session(trained.onnx, "cuda")
        except ProviderError as exc:
            assert "cuda" in str(exc).lower()
        else:
            assert used == "CUDAExecutionProvider"  # a real GPU: it must really be used
            pytest.skip("a usable CUDA GPU is present")
    else:
        with pytest.raises(ProviderError, match="not available"):
            create_session(trained.onnx, "cuda")


def test_provider_error_through_the_cli(trained: TrainedModel) -> None:
    import onnxruntime as ort

    try:
        create_session(trained.onnx, "cuda")
        pytest.skip("a usable CUDA GPU is present")
    except ProviderError:
        pass
    result = run_cli("predict", "--onnx", trained.onnx, str(trained.data / "test"), "--provider", "cuda", expect=1)
    assert "Traceback" not in result.output and "--provider cpu" in result.output
    assert ort.get_available_providers()  # sanity: ORT itself is fine


def test_auto_provider_reports_what_it_used(trained: TrainedModel) -> None:
    _, used = create_session(trained.onnx, "auto")
    assert used in ("CUDAExecutionProvider", "CPUExecutionProvider")
