"""`demo` writes only its own files (issue 29 item 6: it replaced a user's exports/model.onnx without a word)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import run_cli


@pytest.mark.slow
def test_demo_leaves_a_users_model_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "exports" / "model.onnx"
    mine.parent.mkdir()
    mine.write_bytes(b"the user's own model")
    out = run_cli("demo", "--epochs", "1", "--image-size", "32", "--quiet").output
    assert mine.read_bytes() == b"the user's own model"
    assert (tmp_path / "exports" / "demo.onnx").is_file() and "its model is exports/demo.onnx" in out
    assert (tmp_path / "reports" / "demo" / "predict.csv").is_file() and (tmp_path / "runs" / "demo").is_dir()
