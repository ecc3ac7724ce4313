"""Resumable and sharded `predict` (local engine, no Ray): kill -9 mid-job and rerun, --shard, manifests."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TrainedModel, run_cli
from tests.scratch import scratch_dir
from tests.waits import WAIT_S

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # uses the trained model


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def archive(request: pytest.FixtureRequest, trained: TrainedModel) -> Path:
    """160 images (copies of the synthetic test split under distinct names) and one broken file."""
    folder = scratch_dir(request, "archive")
    sources = sorted((trained.data / "test").rglob("*.png"))
    for i in range(160):
        shutil.copy(sources[i % len(sources)], folder / f"img_{i:04d}.png")
    (folder / "img_bad.png").write_bytes(b"not an image")
    return folder


def test_killed_job_resumes_and_predicts_every_image_once(tmp_path: Path, trained: TrainedModel,
                                                          archive: Path) -> None:
    out = tmp_path / "preds.csv"
    parts = tmp_path / "preds.csv.parts"
    cmd = [sys.executable, str(ROOT / "cli.py"), "predict", "--onnx", str(trained.onnx), str(archive), "-o", str(out),
           "--batch-size", "2", "--part-size", "4", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + WAIT_S
    while not list(parts.glob("part-*.csv")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not out.exists(), "the job finished before it could be killed"
    done_before = sum(len(read_csv(p)) for p in parts.glob("part-*.csv"))
    assert 0 < done_before < 161

    rerun = run_cli("predict", "--onnx", trained.onnx, archive, "-o", out, "--batch-size", "2", "--quiet")
    assert f"resuming: {done_before} of 161 images already done" in rerun.output
    rows = read_csv(out)
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in archive.iterdir())  # each exactly once
    assert [r["error"] for r in rows if r["error"]] == ["not a supported image (JPEG, PNG, BMP, TIFF or WebP)"]
    assert not parts.exists()
    # the same numbers as one uninterrupted run
    run_cli("predict", "--onnx", trained.onnx, archive, "-o", tmp_path / "whole.csv", "--quiet")
    assert read_csv(tmp_path / "whole.csv") == rows


def test_parts_of_another_model_are_discarded(tmp_path: Path, trained: TrainedModel, archive: Path) -> None:
    out = tmp_path / "p.csv"
    parts = tmp_path / "p.csv.parts"
    parts.mkdir()
    (parts / "job.json").write_text('{"model_sha256": "0000"}')
    (parts / "part-x.csv").write_text("path,prediction,p_benign,p_malignant,threshold,error\n"
                                      f"{archive / 'img_0000.png'},malignant,0.0,1.0,0.5,\n")
    result = run_cli("predict", "--onnx", trained.onnx, archive / "img_0000.png", "-o", out, "--quiet",
                     "--threshold", "0.5")
    assert "discarding the partial results" in result.output
    assert float(read_csv(out)[0]["p_malignant"]) < 1.0


def test_shards_partition_the_job_and_manifests_list_it(tmp_path: Path, trained: TrainedModel,
                                                        archive: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    images = sorted(p for p in archive.iterdir() if p.name != "img_bad.png")[:30]
    manifest = tmp_path / "list.csv"  # relative paths: relative to the manifest's folder
    manifest.write_text("path,site\n" + "".join(f"{os.path.relpath(p, tmp_path)},x\n" for p in images))
    pq.write_table(pa.table({"path": [str(p) for p in images]}), tmp_path / "list.parquet")
    shard_paths = []
    for i in range(3):
        run_cli("predict", "--onnx", trained.onnx, manifest, "--shard", f"{i}/3", "-o", tmp_path / f"s{i}.csv",
                "--quiet")
        shard_paths.append({os.path.normpath(r["path"]) for r in read_csv(tmp_path / f"s{i}.csv")})
    assert all(shard_paths) and sum(len(s) for s in shard_paths) == len(images)
    assert set().union(*shard_paths) == {str(p) for p in images}
    run_cli("predict", "--onnx", trained.onnx, tmp_path / "list.parquet", "-o", tmp_path / "all.parquet", "--quiet")
    table = pq.read_table(tmp_path / "all.parquet").to_pylist()
    assert [r["path"] for r in table] == [str(p) for p in images] and all(r["error"] == "" for r in table)
    by_shard = {os.path.normpath(r["path"]): float(r["p_malignant"])
                for i in range(3) for r in read_csv(tmp_path / f"s{i}.csv")}
    assert all(abs(by_shard[r["path"]] - r["p_malignant"]) <= 5e-7 for r in table)  # CSV keeps 6 decimals
    bad = run_cli("predict", "--onnx", trained.onnx, manifest, "--shard", "3/3", "-o", tmp_path / "x.csv", expect=2)
    assert "--shard" in bad.output
