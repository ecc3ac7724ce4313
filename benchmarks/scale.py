"""Scale-out costs, as ratios measured side by side in one run (the machine is shared and noisy).

    python -m benchmarks.scale predict   # predict --engine ray (2 workers) vs local predict, same images and cores
    python -m benchmarks.scale ddp       # torchrun DDP world size 2 vs one process, training images/s per sample

``predict`` exports a random-init ResNet50 (speed does not depend on the weights), takes isic-bm JPEGs
(or synthetic images where absent), starts one local Ray (2 CPUs, 127.0.0.1) and alternates local and Ray
jobs over the same files, each timed end to end (a Ray job includes starting its actors); the start of Ray
itself is reported on its own.
``ddp`` trains the same synthetic set for 2 epochs alone (OMP threads = cores), under torchrun with 2
processes (1 thread each) and alone with 1 thread, and compares epoch-2 training images/s (epoch 1 includes
warm-up). Ideal DDP x2 on 2 cores = 2 x the one-thread process.
Results are printed and written as JSON under /tmp/skinonnx-bench/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "isic-bm"


def export_random_model(path: Path, image_size: int) -> None:
    import torch

    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.deploy.contract import ModelContract
    from skinonnx.export.onnx_export import to_onnx
    from skinonnx.training.model import build_model

    torch.manual_seed(0)
    contract = ModelContract(classes=("benign", "malignant"), positive_index=1,
                             preprocessing=Preprocessing.for_size(image_size))
    to_onnx(build_model(2, "none").eval(), contract, path, 17)


def bench_images(work: Path, count: int) -> list[Path]:
    if REAL_DATA.is_dir():
        return sorted(REAL_DATA.rglob("*.jpg"))[:count]
    from skinonnx.data.synthetic import generate_dataset

    generate_dataset(work / "synthetic", counts={"train": 1, "val": 1, "test": count // 2}, size=256, seed=0,
                     progress=False)
    return sorted((work / "synthetic" / "test").rglob("*.png"))


def predict_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """End-to-end rate of each job on an already started Ray: a Ray job includes starting its actors and
    loading their sessions, a local one its session's first runs, so the ratio is conservative for Ray."""
    import ray

    from skinonnx.cpus import physical_cores
    from skinonnx.deploy.predict import run_job
    from skinonnx.deploy.runtime import OnnxClassifier

    model = work / "model.onnx"
    export_random_model(model, args.image_size)
    paths = bench_images(work, args.count)
    cores = physical_cores()
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    ray_start_s = time.perf_counter() - t0
    rates: dict[str, list[float]] = {"local": [], "ray": []}
    ray_options = {"workers": cores, "gpus_per_worker": 0.0, "address": None, "provider": "cpu"}
    try:
        for r in range(args.rounds + 1):  # round 0 warms up (file cache, imports)
            for engine in ("local", "ray"):
                start = time.perf_counter()
                classifier = OnnxClassifier(model, "cpu")  # both engines load their session(s) inside the timing
                result, journal = run_job(classifier, paths, work / f"{engine}-{r}.csv", batch_size=8,
                                          progress=False, ray_options=ray_options if engine == "ray" else None,
                                          echo=lambda m: None)
                rate = len(result.rows) / (time.perf_counter() - start)
                journal.remove()
                if r:
                    rates[engine].append(rate)
                print(f"round {r} {engine}: {rate:.2f} images/s end to end", flush=True)
    finally:
        ray.shutdown()
    local, on_ray = (sum(rates[k]) / len(rates[k]) for k in ("local", "ray"))
    return {"images": len(paths), "image_size": args.image_size, "cores": cores, "ray_workers": cores,
            "local_images_per_s": local, "ray_images_per_s": on_ray, "ratio_ray_over_local": on_ray / local,
            "local_images_per_s_per_core": local / cores, "ray_start_seconds": ray_start_s, "rounds": rates,
            "real_images": REAL_DATA.is_dir()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(work: Path, data: Path, name: str, world: int, args: argparse.Namespace, threads: int) -> float:
    train_args = ["train", "--data", str(data), "--weights", "none", "--epochs", "2", "--batch-size", "16",
                  "--image-size", str(args.image_size), "--no-calibrate", "--quiet", "--early-stop", "0",
                  "--name", name, "--checkpoint-dir", str(work / name), "--runs-dir", str(work / "runs")]
    launcher = [sys.executable, str(ROOT / "cli.py")]
    if world > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_addr",
                    "127.0.0.1", "--master_port", str(_free_port()), str(ROOT / "cli.py")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    subprocess.run([*launcher, *train_args], cwd=ROOT, env=env, check=True, capture_output=True)
    with open(work / "runs" / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return float(rows[-1]["train_images_per_s"])


def ddp_bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from skinonnx.cpus import physical_cores
    from skinonnx.data.synthetic import generate_dataset

    data = work / "data"
    generate_dataset(data, counts={"train": args.train // 2, "val": 8, "test": 1}, size=args.image_size * 2,
                     seed=0, progress=False)
    cores = physical_cores()
    rates: dict[str, list[float]] = {"one": [], "one_1thread": [], "ddp2": []}
    for r in range(args.rounds):
        rates["one"].append(_train(work, data, f"one{r}", 1, args, cores))
        rates["ddp2"].append(_train(work, data, f"two{r}", 2, args, max(1, cores // 2)))
        rates["one_1thread"].append(_train(work, data, f"single{r}", 1, args, 1))
        print(f"round {r}: one process ({cores} threads) {rates['one'][-1]:.2f}, DDP x2 (1 thread each) "
              f"{rates['ddp2'][-1]:.2f}, one process (1 thread) {rates['one_1thread'][-1]:.2f} images/s", flush=True)
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    return {"cores": cores, "image_size": args.image_size, "train_images": args.train, "global_batch": 16,
            **{f"{k}_images_per_s": v for k, v in mean.items()},
            "ratio_ddp2_over_one": mean["ddp2"] / mean["one"],
            "ratio_ddp2_over_one_1thread": mean["ddp2"] / mean["one_1thread"], "rounds": rates}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["predict", "ddp"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--count", type=int, default=96, help="predict: images per job")
    p.add_argument("--train", type=int, default=64, help="ddp: training images")
    p.add_argument("--image-size", type=int, default=None, help="default: 224 (predict), 96 (ddp)")
    p.add_argument("--out", type=Path, default=Path("/tmp/skinonnx-bench"))
    args = p.parse_args(argv)
    args.image_size = args.image_size or (224 if args.what == "predict" else 96)
    work = Path(tempfile.mkdtemp(prefix=f"scale-{args.what}-"))
    try:
        result = (predict_bench if args.what == "predict" else ddp_bench)(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["load_average"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"scale-{args.what}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
