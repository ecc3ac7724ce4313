"""`predict --engine ray` for real on a local Ray (2 CPUs, 127.0.0.1, no dashboard), shared by the module.

Same rows and probabilities as the local engine; resumes a job the local engine left half done; a worker
killed with SIGKILL mid-job is restarted by Ray and every image still comes out exactly once.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import MulticlassModel, TrainedModel, run_cli
from tests.scratch import scratch_dir
from tests.waits import WAIT_S

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'skinonnx[scale]'")
pq = pytest.importorskip("pyarrow.parquet")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # uses the trained model


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module: the commands below find it initialised and use it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def images(request: pytest.FixtureRequest, trained: TrainedModel, real_images: list[Path]) -> Path:
    folder = scratch_dir(request, "ray-images")
    sources = sorted((trained.data / "test").rglob("*.png")) + real_images
    for i in range(96):
        src = sources[i % len(sources)]
        shutil.copy(src, folder / f"img_{i:03d}{src.suffix}")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return folder


@pytest.fixture(scope="module")
def real_images() -> list[Path]:
    """A few isic-bm JPEGs where the data is present (CI), else none: the synthetic PNGs carry the test."""
    from tests.conftest import REAL_DATA

    return sorted((REAL_DATA / "test").rglob("*.jpg"))[:8] if REAL_DATA.is_dir() else []


def rows_of(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def test_ray_equals_local_and_resumes_a_local_job(ray_cluster: str, tmp_path: Path, trained: TrainedModel,
                                                  images: Path) -> None:
    run_cli("predict", "--onnx", trained.onnx, images, "-o", tmp_path / "local.parquet", "--quiet")
    local = rows_of(tmp_path / "local.parquet")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{images / r['path'].split('/')[-1]}\n" for r in local))
    out = tmp_path / "ray.parquet"
    parts = tmp_path / "ray.parquet.parts"
    result = run_cli("predict", "--onnx", trained.onnx, manifest, "-o", out, "--quiet", "--engine", "ray",
                     "--ray-workers", "2", "--batch-size", "4")
    assert "Ray (local, 127.0.0.1): 2 workers x 1 CPU" in result.output
    ray_rows = rows_of(out)
    assert [r["path"] for r in ray_rows] == [r["path"] for r in local]  # same order, each image once
    assert list(ray_rows[0]) == list(local[0])  # same columns
    for a, b in zip(local, ray_rows, strict=True):
        assert a["error"] == b["error"] and a["prediction"] == b["prediction"]
        if not a["error"]:
            assert abs(a["p_malignant"] - b["p_malignant"]) <= 1e-6 and abs(a["p_benign"] - b["p_benign"]) <= 1e-6
    broken = [r["path"] for r in ray_rows if r["error"].startswith("corrupt or truncated")]
    assert broken == [str(images / "broken.jpg")]
    assert not parts.exists()

    # resume: rows an interrupted local-engine run left in its journal are kept, Ray predicts only the rest
    out2 = tmp_path / "resumed.csv"
    from skinonnx.data.inputs import read_manifest
    from skinonnx.deploy.predict import run_job
    from skinonnx.deploy.runtime import OnnxClassifier

    half = read_manifest(manifest)[::2]
    run_job(OnnxClassifier(trained.onnx, "cpu"), half, out2, progress=False)  # leaves its parts, like a kill
    result = run_cli("predict", "--onnx", trained.onnx, manifest, "-o", out2, "--quiet", "--engine", "ray",
                     "--ray-workers", "2", "--batch-size", "4")
    assert f"resuming: {len(half)} of {len(local)} images already done" in result.output
    with open(out2, newline="") as f:
        resumed = list(csv.DictReader(f))
    assert sorted(r["path"] for r in resumed) == sorted(str(images / r["path"].split("/")[-1]) for r in local)


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _actor_pids(root: int) -> list[int]:
    pids = []
    for pid in _descendants(root):
        try:
            if b"OrtPredictor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            pass
    return pids


def test_killed_worker_job_still_predicts_every_image_once(ray_cluster: str, tmp_path: Path,
                                                           trained: TrainedModel, images: Path) -> None:
    """SIGKILL one actor process of a running job (on this module's cluster, via --address)."""
    out = tmp_path / "faulty.csv"
    parts = tmp_path / "faulty.csv.parts"
    cmd = [sys.executable, str(ROOT / "cli.py"), "predict", "--onnx", str(trained.onnx), str(images), "-o", str(out),
           "--engine", "ray", "--address", ray_cluster, "--ray-workers", "2", "--batch-size", "1", "--part-size", "2",
           "--quiet"]
    killed: list[int] = []

    def kill_one_worker() -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not killed:
            pids = _actor_pids(os.getpid())  # actors are children of this test process's raylet
            if pids and list(parts.glob("part-*")) and not out.exists():
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=WAIT_S)
    killer.join()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert killed, "no worker was killed mid-job"
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in images.iterdir())


def test_ray_rows_equal_local_rows_for_three_classes(ray_cluster: str, tmp_path: Path,
                                                     multiclass_model: MulticlassModel) -> None:
    """K classes: the same p_<class>, p_malignant, malignant, label and in_distribution from both engines."""
    test_images = multiclass_model.data / "test"
    run_cli("predict", "--onnx", multiclass_model.onnx, test_images, "-o", tmp_path / "local.parquet", "--quiet")
    run_cli("predict", "--onnx", multiclass_model.onnx, test_images, "-o", tmp_path / "ray.parquet", "--quiet",
            "--engine", "ray", "--ray-workers", "2", "--batch-size", "4")
    local, ray_rows = rows_of(tmp_path / "local.parquet"), rows_of(tmp_path / "ray.parquet")
    assert {"p_malignant", "malignant", "label", "in_distribution", "p_benign_red"} <= set(local[0])
    assert list(ray_rows[0]) == list(local[0]) and len(local) == 9
    assert ray_rows == local  # every value, bit for bit: one row builder, the same graph outputs
