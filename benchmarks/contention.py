"""Speed when the CPU is shared: old vs new thread settings, with the cores free and with competing load.

    python -m benchmarks.contention [--rounds 2] [--image-size 64] [--hogs 2]

For each round, with the cores free and then with ``--hogs`` CPU-bound processes (spawned here
and killed afterwards) holding them, each thread setting runs in a fresh process (the OpenMP wait
policy is read when torch loads, so it cannot change inside one): PyTorch training steps (the
skinonnx ``train_step``, channels_last, batch 16) and ONNX Runtime inference (``OnnxClassifier``
at batch 8). Settings:

* ``before``: what skinonnx did before: torch threads = physical cores with OpenMP's default
  spin-waiting, ONNX Runtime intra-op spinning on;
* ``after``: the defaults now: ``OMP_WAIT_POLICY=PASSIVE`` (set by the CLI before torch loads),
  ONNX Runtime spinning off, same thread counts;
* ``1 thread``: one thread each, for reference (what ``OMP_NUM_THREADS=1`` gave the new user).

Prints images/s and the ratios within this run, with the load average; JSON with ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .peak import median

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "before": {"env": {}, "unset": ["OMP_WAIT_POLICY"], "spinning": True, "threads": 0},
    "after": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "unset": [], "spinning": False, "threads": 0},
    "1 thread": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "unset": [], "spinning": False, "threads": 1},
}
HOG = "while True: pass"


def probe(onnx_path: str, image_size: int, train_steps: int, ort_calls: int, spinning: bool, threads: int) -> dict:
    """Runs in the child: training steps and ORT calls; images/s medians."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from torch import nn

    from skinonnx.cpus import physical_cores
    from skinonnx.deploy.runtime import session_options
    from skinonnx.training.loop import TrainConfig, make_optimizer, train_step
    from skinonnx.training.model import build_model

    threads = threads or physical_cores()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(2, "none").to(memory_format=torch.channels_last).train()
    optimizer = make_optimizer(TrainConfig(weights="none", name="bench"), model)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    x, y = torch.randn(16, 3, image_size, image_size), torch.randint(0, 2, (16,))
    cpu = torch.device("cpu")
    rates = []
    for i in range(train_steps + 1):
        start = time.perf_counter()
        train_step(model, x, y, nn.CrossEntropyLoss(), optimizer, cpu, scaler=scaler, amp=False, channels_last=True)
        if i:  # the first step warms oneDNN's primitive cache
            rates.append(len(y) / (time.perf_counter() - start))
    session = ort.InferenceSession(onnx_path, session_options(threads, spinning=spinning),
                                   providers=["CPUExecutionProvider"])
    batch = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal(
        (8, 3, image_size, image_size), dtype=np.float32)}
    ort_rates = []
    for i in range(ort_calls + 1):
        start = time.perf_counter()
        session.run(None, batch)
        if i:
            ort_rates.append(8 / (time.perf_counter() - start))
    return {"train_images_per_s": median(rates), "ort_images_per_s": median(ort_rates), "threads": threads,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)")}


def export_model(path: Path, image_size: int) -> None:
    import torch

    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.deploy.contract import ModelContract
    from skinonnx.export.onnx_export import to_onnx
    from skinonnx.training.model import build_model

    torch.manual_seed(0)
    contract = ModelContract(classes=("benign", "malignant"), positive_index=1,
                             preprocessing=Preprocessing.for_size(image_size))
    to_onnx(build_model(2, "none").eval(), contract, path, 17)


def run_setting(name: str, args: argparse.Namespace, onnx_path: Path) -> dict:
    setting = SETTINGS[name]
    env = {k: v for k, v in os.environ.items() if k not in setting["unset"] and k != "OMP_NUM_THREADS"}
    env.update(setting["env"])
    cmd = [sys.executable, "-m", "benchmarks.contention", "--probe", str(onnx_path), "--image-size",
           str(args.image_size), "--train-steps", str(args.train_steps), "--ort-calls", str(args.ort_calls),
           "--threads", str(setting["threads"])] + (["--spinning"] if setting["spinning"] else [])
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_hogs(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait()


def main(argv: list[str] | None = None) -> int:
    from skinonnx.cpus import physical_cores

    p = argparse.ArgumentParser(prog="python -m benchmarks.contention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--ort-calls", type=int, default=6)
    p.add_argument("--hogs", type=int, default=None, help="Competing CPU-bound processes (default: physical cores).")
    p.add_argument("--settings", default=",".join(SETTINGS), help="Comma-separated: " + ", ".join(SETTINGS))
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spinning", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, args.image_size, args.train_steps, args.ort_calls, args.spinning,
                               args.threads)))
        return 0
    hogs_n = args.hogs if args.hogs is not None else physical_cores()
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    results: dict[str, dict[str, list[dict]]] = {c: {n: [] for n in names} for c in ("free", "busy")}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="skinonnx-contention-") as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        export_model(onnx_path, args.image_size)
        for r in range(args.rounds):
            for condition in ("free", "busy"):
                hogs = start_hogs(hogs_n) if condition == "busy" else []
                try:
                    for name in names:
                        print(f"round {r + 1}/{args.rounds}, {condition}: {name}", file=sys.stderr, flush=True)
                        loads.append(os.getloadavg()[0])
                        results[condition][name].append(run_setting(name, args, onnx_path))
                finally:
                    stop_hogs(hogs)
    summary = {c: {n: {k: median([row[k] for row in rows]) for k in ("train_images_per_s", "ort_images_per_s")}
                   for n, rows in per.items()} for c, per in results.items()}
    print(f"{args.image_size} px, {hogs_n} competing process(es) when busy, {args.rounds} round(s), "
          f"load average {min(loads):.1f}-{max(loads):.1f} (1 min) during the run")
    print(f"{'setting':<10} {'train free':>10} {'train busy':>10} {'busy/free':>9} {'ORT free':>9} {'ORT busy':>9} "
          f"{'busy/free':>9}")
    for name in names:
        f, b = summary["free"][name], summary["busy"][name]
        print(f"{name:<10} {f['train_images_per_s']:>10.1f} {b['train_images_per_s']:>10.1f} "
              f"{b['train_images_per_s'] / f['train_images_per_s']:>9.2f} {f['ort_images_per_s']:>9.1f} "
              f"{b['ort_images_per_s']:>9.1f} {b['ort_images_per_s'] / f['ort_images_per_s']:>9.2f}")
    if "before" in names and "after" in names:
        for condition in ("free", "busy"):
            a, b = summary[condition]["after"], summary[condition]["before"]
            train = a["train_images_per_s"] / b["train_images_per_s"]
            print(f"after / before, cores {condition}: training {train:.2f}x, "
                  f"ONNX Runtime {a['ort_images_per_s'] / b['ort_images_per_s']:.2f}x")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": summary, "raw": results, "hogs": hogs_n, "loads": loads,
                                        "image_size": args.image_size}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
