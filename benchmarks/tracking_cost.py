"""What MLflow tracking costs a run (docs/TRACKING.md): importing mlflow, creating the SQLite store (its
migrations), opening an existing one, logging one epoch's metrics, and `train` with vs without --track.

    python -m benchmarks.tracking_cost            # ~3 minutes on 2 idle cores (two tiny training runs)
    python -m benchmarks.tracking_cost --no-train # the store and logging figures only (~30 s)

Each figure that involves an import is measured in a fresh interpreter. Prints a table and writes JSON
(default /tmp/skinonnx-bench/tracking-<time>.json). The machine is shared: compare figures from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STORE_PROBE = """
import json, sys, time
t0 = time.perf_counter()
import mlflow
from mlflow.tracking import MlflowClient
t1 = time.perf_counter()
client = MlflowClient(sys.argv[1]); client.search_experiments()
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "store_s": t2 - t1}))
"""

LOG_PROBE = """
import json, statistics, sys, time
from skinonnx.tracking.tracker import Tracker, client_for
from mlflow.entities import Metric
uri = sys.argv[1]
tracker = Tracker(uri, run_name="bench")
run_id = tracker.run_id(300)
client = client_for(uri)
row = {"train_loss": 0.69, "train_acc": 0.5, "train_images_per_s": 30.0, "val_loss": 0.69, "val_acc": 0.5,
       "val_auc": 0.5, "val_ece": 0.01, "lr": 3e-4, "epoch_seconds": 10.0, "epoch": 1}
direct, queued = [], []
for step in range(30):
    t = time.perf_counter()
    client.log_batch(run_id, metrics=[Metric(k, v, 0, step) for k, v in row.items()])
    direct.append(time.perf_counter() - t)
    t = time.perf_counter()
    tracker.log_metrics(row, step=step)
    queued.append(time.perf_counter() - t)
t = time.perf_counter(); tracker.finish(); finish = time.perf_counter() - t
print(json.dumps({"log_epoch_store_ms": 1000 * statistics.median(direct),
                  "log_epoch_caller_ms": 1000 * statistics.median(queued), "finish_s": finish}))
"""


def _python(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _train(work: Path, data: Path, name: str, track: bool, epochs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}
    args = [sys.executable, str(ROOT / "cli.py"), "train", "--data", str(data), "--weights", "none", "--epochs",
            str(epochs), "--image-size", "32", "--batch-size", "16", "--threads", "1", "--quiet", "--early-stop", "0",
            "--name", name, "--runs-dir", str(work / "runs"), *(["--track"] if track else [])]
    t = time.perf_counter()
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True, cwd=work)
    wall = time.perf_counter() - t
    with open(work / "runs" / name / "metrics.csv") as handle:
        rows = handle.read().splitlines()
    head = rows[0].split(",")
    epoch_s = [float(r.split(",")[head.index("epoch_seconds")]) for r in rows[1:]]
    return {"wall_s": wall, "epoch_seconds": epoch_s, "tracked_line": bool(re.search("tracked in MLflow", out.stdout))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tracking_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-train", action="store_true", help="Skip the two training runs.")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", type=Path,
                   default=Path("/tmp/skinonnx-bench") / f"tracking-{time.strftime('%Y%m%d-%H%M%S')}.json")
    args = p.parse_args(argv)
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fresh = _python(STORE_PROBE, f"sqlite:///{work / 'new.db'}")
        again = _python(STORE_PROBE, f"sqlite:///{work / 'new.db'}")
        result.update({"import_mlflow_s": again["import_s"], "create_store_s": fresh["store_s"],
                       "open_store_s": again["store_s"]})
        result.update(_python(LOG_PROBE, f"sqlite:///{work / 'new.db'}"))
        if not args.no_train:
            from skinonnx.data.synthetic import generate_dataset

            data = work / "data"
            generate_dataset(data, counts={"train": 24, "val": 12, "test": 4}, size=40, seed=0, progress=False)
            plain = _train(work, data, "plain", False, args.epochs)
            tracked = _train(work, data, "tracked", True, args.epochs)
            result.update({"train_plain": plain, "train_tracked": tracked,
                           "added_wall_s": tracked["wall_s"] - plain["wall_s"],
                           "epoch_ratio_tracked_vs_plain": (sum(tracked["epoch_seconds"][1:]) /
                                                            max(1e-9, sum(plain["epoch_seconds"][1:])))})
    for key, value in result.items():
        if not isinstance(value, dict):
            print(f"{key:32s} {value:10.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")
    return result


if __name__ == "__main__":
    main()
