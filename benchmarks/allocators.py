"""Does the memory allocator matter for PyTorch on this CPU? (ONNX Runtime uses its own arena.)

    python -m benchmarks.allocators [--rounds 2]

Runs the same probe (eager fp32 forward at batch 32, then training steps at batch 16, 224 px)
in fresh processes under glibc malloc, glibc kept from returning freed memory by `mallopt` (what
`train` does by default, skinonnx/training/allocator.py) or by GLIBC_TUNABLES, and
tcmalloc / jemalloc when installed (LD_PRELOAD), round-robin; prints images/s, the share of
CPU time spent in the kernel and page faults. Allocators are process-wide, so unlike the
other benchmarks this one cannot run the variants in one process: compare the kernel-time
share and faults (robust) more than images/s (noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

GLIBC_KEEP_MEMORY = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=8589934592"
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
CONFIGS = {
    "glibc malloc (default)": {"SKINONNX_MALLOC": "system"},
    "glibc + mallopt (train)": {"SKINONNX_MALLOC": "keep"},
    "glibc + GLIBC_TUNABLES": {"GLIBC_TUNABLES": GLIBC_KEEP_MEMORY},
    "tcmalloc (LD_PRELOAD)": {"LD_PRELOAD": "libtcmalloc_minimal.so.4"},
    "jemalloc (LD_PRELOAD)": {"LD_PRELOAD": "libjemalloc.so.2"},
}


def find_library(name: str) -> str | None:
    return next((str(Path(d) / name) for d in LIBRARY_DIRS if (Path(d) / name).is_file()), None)


def probe(forward_batch: int = 32, train_batch: int = 16, image_size: int = 224) -> dict[str, float]:
    from skinonnx.training.allocator import keep_freed_memory

    keep_freed_memory()  # no-op under SKINONNX_MALLOC=system, GLIBC_TUNABLES or an LD_PRELOADed allocator
    import torch
    from torch import nn

    from skinonnx.cpus import physical_cores
    from skinonnx.training.model import build_model

    torch.set_num_threads(physical_cores())

    def measure(fn, calls: int, images: int) -> tuple[float, float, float]:
        fn()
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(calls):
            fn()
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return (images * calls / seconds, (after.ru_stime - before.ru_stime) / max(cpu, 1e-9),
                (after.ru_minflt - before.ru_minflt) / calls)

    torch.manual_seed(0)
    model = build_model(2, "none").eval()
    x = torch.randn(forward_batch, 3, image_size, image_size)
    with torch.inference_mode():
        fwd = measure(lambda: model(x), 3, forward_batch)
    model.train()
    optimizer, criterion = torch.optim.AdamW(model.parameters(), 1e-4), nn.CrossEntropyLoss()
    xb, yb = torch.randn(train_batch, 3, image_size, image_size), torch.randint(0, 2, (train_batch,))

    def step() -> None:
        optimizer.zero_grad()
        criterion(model(xb), yb).backward()
        optimizer.step()

    train = measure(step, 2, train_batch)
    return {"forward_images_per_s": fwd[0], "forward_kernel_share": fwd[1], "forward_faults_per_call": fwd[2],
            "train_images_per_s": train[0], "train_kernel_share": train[1], "train_faults_per_step": train[2]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.allocators", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    configs = {}
    for name, env in CONFIGS.items():
        if "LD_PRELOAD" in env:
            path = find_library(env["LD_PRELOAD"])
            if path is None:
                print(f"skipping {name}: {env['LD_PRELOAD']} not installed", file=sys.stderr)
                continue
            env = {**env, "LD_PRELOAD": path}
        configs[name] = env
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    root = Path(__file__).resolve().parents[1]
    for r in range(args.rounds):
        for name, env in configs.items():
            print(f"round {r + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            run = subprocess.run([sys.executable, "-m", "benchmarks.allocators", "--probe"], cwd=root,
                                 env={**os.environ, **env}, capture_output=True, text=True, check=True)
            results[name].append(json.loads(run.stdout.strip().splitlines()[-1]))
    print(f"{'allocator':<26} {'fwd b32 img/s':>13} {'kernel':>7} {'faults/call':>12} {'train b16 img/s':>16} "
          f"{'kernel':>7} {'faults/step':>12}")
    for name, rows in results.items():
        def med(key: str, rows=rows) -> float:
            values = sorted(row[key] for row in rows)
            return values[len(values) // 2]
        print(f"{name:<26} {med('forward_images_per_s'):>13.2f} {med('forward_kernel_share'):>7.1%} "
              f"{med('forward_faults_per_call'):>12,.0f} {med('train_images_per_s'):>16.2f} "
              f"{med('train_kernel_share'):>7.1%} {med('train_faults_per_step'):>12,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
