"""Training speed against the hardware limit: plain loop vs the path before issue 16 vs today's defaults.

    python -m benchmarks.train_speed                   # 224 px, batch 16, cores free and busy
    python -m benchmarks.train_speed --steps 3 --conditions free --variants plain,before,default

Every variant runs in a fresh process (the allocator and OpenMP's wait policy are process-wide
and fixed when torch loads), round-robin, on the same images (isic-bm when present, else
generated), with the real ``train_step``: warm-up steps, then ``--steps`` timed steps (median).

* ``plain``: fp32 NCHW, every JPEG decoded every step, glibc malloc, OpenMP spin-waiting;
* ``before``: skinonnx before issue 16: channels_last + decoded-once cache, same process settings;
* ``default-fp32``: today's defaults without bf16: + mallopt keeping freed memory + OpenMP passive wait;
* ``default``: what ``train`` does now (+ bf16 autocast where the CPU has a bf16 unit);
* ``compile``: ``default`` + ``torch.compile`` (cores free only): its compile time and the steps from
  which it pays (compile seconds / seconds saved per step).

"busy": ``--hogs`` CPU-bound processes (default: one per physical core) run beside it, spawned
and killed here. Fraction of the limit: 3 x forward FLOPs per image (forward + backward, 24.5
GFLOP at 224 px) x images/s / the measured fp32 FMA peak (benchmarks/fma_peak.c). bf16 units
can exceed the fp32 peak, so a bf16 variant's fraction is of the fp32 limit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .peak import DOCUMENTED_FMA_PEAK_GFLOPS, median

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "isic-bm"
SPIN_DEFAULT = {"unset": ["OMP_WAIT_POLICY"], "env": {"SKINONNX_MALLOC": "system"}}
VARIANTS = {
    "plain": {**SPIN_DEFAULT, "channels_last": False, "cached": False, "amp": False, "compile": False},
    "before": {**SPIN_DEFAULT, "channels_last": True, "cached": True, "amp": False, "compile": False},
    "default-fp32": {"unset": ["SKINONNX_MALLOC"], "env": {"OMP_WAIT_POLICY": "PASSIVE"}, "channels_last": True,
                     "cached": True, "amp": False, "compile": False},
    "default": {"unset": ["SKINONNX_MALLOC"], "env": {"OMP_WAIT_POLICY": "PASSIVE"}, "channels_last": True,
                "cached": True, "amp": True, "compile": False},
    "compile": {"unset": ["SKINONNX_MALLOC"], "env": {"OMP_WAIT_POLICY": "PASSIVE"}, "channels_last": True,
                "cached": True, "amp": True, "compile": True},
}


def probe(variant: str, data: str, image_size: int, batch_size: int, steps: int, warmup: int) -> dict:
    """Child process: one variant's training steps on the same images."""
    from skinonnx.training.allocator import keep_freed_memory

    allocator = keep_freed_memory()
    import torch
    from torch import nn

    from skinonnx.data.layouts import discover
    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.training.compile import CompiledSteps
    from skinonnx.training.device import amp_dtype, configure_threads
    from skinonnx.training.loaders import ImageCache, LesionDataset, make_loader
    from skinonnx.training.loop import TrainConfig, make_optimizer, train_step
    from skinonnx.training.model import build_model

    spec = VARIANTS[variant]
    threads = configure_threads(None)
    cpu = torch.device("cpu")
    samples = discover(data, write_split_file=False).split("train")
    need = batch_size * (steps + warmup + 1)
    samples = samples[:: max(1, len(samples) // need)][:need]
    prep = Preprocessing.for_size(image_size)
    cache = ImageCache(prep, limit_bytes=(1 << 40) if spec["cached"] else 0)
    usable, _ = cache.fill(samples, progress=False)
    loader = make_loader(LesionDataset(usable, cache, train=True), batch_size=batch_size, shuffle=True, workers=0,
                         seed=0, device=cpu)
    torch.manual_seed(0)
    model = build_model(2, "none")
    if spec["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    dtype = amp_dtype(cpu, spec["amp"])
    train_model, compile_seconds = model, None
    if spec["compile"]:
        train_model = CompiledSteps(model, batch_size)
        compile_seconds = train_model.warm_up(image_size, cpu, channels_last=spec["channels_last"], dtype=dtype)
    optimizer = make_optimizer(TrainConfig(weights="none", name="bench"), model)
    criterion, scaler = nn.CrossEntropyLoss(), torch.amp.GradScaler("cuda", enabled=False)
    batches = iter(())
    rates, data_share = [], []
    usage = None
    for i in range(warmup + steps):
        if i == warmup:
            usage = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        try:
            images, targets = next(batches)
        except StopIteration:
            batches = iter(loader)
            images, targets = next(batches)
        if len(targets) != batch_size:
            batches = iter(loader)
            images, targets = next(batches)
        loaded = time.perf_counter()
        train_step(train_model, images, targets, criterion, optimizer, cpu, scaler=scaler, amp=dtype is not None,
                   channels_last=spec["channels_last"], dtype=dtype)
        end = time.perf_counter()
        if i >= warmup:
            rates.append(batch_size / (end - start))
            data_share.append((loaded - start) / (end - start))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    return {"images_per_s": median(rates), "step_seconds": batch_size / median(rates), "rates": rates,
            "data_time_fraction": median(data_share), "threads": threads, "allocator": allocator,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
            "precision": str(dtype).removeprefix("torch.") if dtype else "float32",
            "kernel_cpu_share": (after.ru_stime - usage.ru_stime) / max(cpu_s, 1e-9),
            "faults_per_step": (after.ru_minflt - usage.ru_minflt) / steps, "compile_seconds": compile_seconds}


def run_variant(name: str, args: argparse.Namespace, data: Path) -> dict:
    spec = VARIANTS[name]
    env = {k: v for k, v in os.environ.items() if k not in spec["unset"] and k != "OMP_NUM_THREADS"}
    env.update(spec["env"])
    cmd = [sys.executable, "-m", "benchmarks.train_speed", "--probe", name, "--data", str(data), "--image-size",
           str(args.image_size), "--batch-size", str(args.batch_size), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None, help="Split ImageFolder (default: isic-bm if present).")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="Timed steps per variant and round.")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--variants", default="plain,before,default-fp32,default,compile")
    p.add_argument("--conditions", default="free,busy", help="free, busy or both.")
    p.add_argument("--hogs", type=int, default=None, help="Competing CPU-bound processes when busy (default: cores).")
    p.add_argument("--peak-gflops", type=float, default=None, help="fp32 FMA peak instead of measuring it.")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.probe, str(args.data), args.image_size, args.batch_size, args.steps,
                               args.warmup)))
        return 0

    from skinonnx.cpus import physical_cores

    from .contention import start_hogs, stop_hogs
    from .peak import measure_fma_peak

    threads = physical_cores()
    hogs_n = args.hogs if args.hogs is not None else threads
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    peaks = [measure_fma_peak(threads)]
    with tempfile.TemporaryDirectory(prefix="skinonnx-trainspeed-") as tmp:
        data = args.data or (REAL_DATA if REAL_DATA.is_dir() else None)
        if data is None:
            from skinonnx.data.synthetic import generate_dataset

            data = Path(tmp) / "synthetic"
            generate_dataset(data, counts={"train": 40, "val": 4, "test": 2}, size=256, seed=0, progress=False)
        results: dict[str, dict[str, list[dict]]] = {c: {n: [] for n in names} for c in conditions}
        loads: dict[str, list[float]] = {c: [] for c in conditions}
        for r in range(args.rounds):
            for condition in conditions:
                hogs = start_hogs(hogs_n) if condition == "busy" else []
                try:
                    for name in names:
                        if name == "compile" and condition == "busy":
                            continue
                        print(f"round {r + 1}/{args.rounds}, cores {condition}: {name}", file=sys.stderr, flush=True)
                        loads[condition].append(os.getloadavg()[0])
                        row = run_variant(name, args, data)
                        results[condition][name].append(row)
                        print(f"  {row['images_per_s']:.2f} img/s ({row['precision']}, {row['allocator']}, load "
                              f"{os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
                finally:
                    stop_hogs(hogs)
    peaks.append(measure_fma_peak(threads))
    measured = max((x for x in peaks if x), default=None)
    # The probe measures what the cores give now; under other people's load that is far below what they
    # can do, so the limit is never taken below the documented peak of this machine kind.
    peak = args.peak_gflops or max(measured or 0.0, DOCUMENTED_FMA_PEAK_GFLOPS)
    gflop_per_image = 3 * 8.17  # forward 8.17 GFLOP at 224 (benchmarks.peak.forward_flops), backward ~2x
    gflop_per_image *= (args.image_size / 224) ** 2
    limit = peak / gflop_per_image
    print(f"\n{args.image_size} px, batch {args.batch_size}, {threads} threads, {args.steps} timed steps x "
          f"{args.rounds} round(s); fp32 FMA peak {peak:.0f} GFLOP/s (probes now: {peaks}) -> "
          f"training limit {limit:.2f} img/s "
          f"({gflop_per_image:.1f} GFLOP per image)")
    summary: dict[str, dict[str, dict]] = {}
    for condition in conditions:
        rows = {n: v for n, v in results[condition].items() if v}
        summary[condition] = {}
        lo, hi = min(loads[condition], default=0), max(loads[condition], default=0)
        print(f"\ncores {condition}" + (f" ({hogs_n} competing processes)" if condition == "busy" else "")
              + f", load average {lo:.1f}-{hi:.1f}")
        print(f"{'variant':<14} {'img/s':>6} {'x plain':>7} {'x before':>8} {'% limit':>7} {'data':>5} {'kernel':>6} "
              f"{'faults/step':>11} {'precision':>9}")
        for name, runs in rows.items():
            ips = median([x["images_per_s"] for x in runs])
            summary[condition][name] = {"images_per_s": ips, "fraction_of_limit": ips / limit,
                                        "data_time_fraction": median([x["data_time_fraction"] for x in runs]),
                                        "kernel_cpu_share": median([x["kernel_cpu_share"] for x in runs]),
                                        "faults_per_step": median([x["faults_per_step"] for x in runs]),
                                        "precision": runs[0]["precision"], "allocator": runs[0]["allocator"],
                                        "compile_seconds": runs[0]["compile_seconds"]}
            s = summary[condition][name]
            plain, before = rows.get("plain"), rows.get("before")
            s["x_plain"] = ips / median([x["images_per_s"] for x in plain]) if plain else float("nan")
            s["x_before"] = ips / median([x["images_per_s"] for x in before]) if before else float("nan")
            print(f"{name:<14} {ips:>6.2f} {s['x_plain']:>7.2f} {s['x_before']:>8.2f} {ips / limit:>7.0%} "
                  f"{s['data_time_fraction']:>5.0%} {s['kernel_cpu_share']:>6.0%} {s['faults_per_step']:>11,.0f} "
                  f"{s['precision']:>9}")
    free = summary.get("free", {})
    if "compile" in free and "default" in free:
        c, d = free["compile"], free["default"]
        saved = 1 / d["images_per_s"] - 1 / c["images_per_s"]  # seconds per image
        per_step = saved * args.batch_size
        speedup = c["images_per_s"] / d["images_per_s"]
        line = f"\ntorch.compile: compiled in {c['compile_seconds']:.0f} s; {speedup:.2f}x "
        if per_step > 0:
            line += f"the default's speed; pays after {c['compile_seconds'] / per_step:.0f} steps"
            c["break_even_steps"] = c["compile_seconds"] / per_step
        else:
            line += "the default's speed: never pays on this machine"
            c["break_even_steps"] = None
        print(line)
    if "free" in summary and "busy" in summary:
        for name in names:
            if name in summary["free"] and name in summary["busy"]:
                summary["busy"][name]["busy_over_free"] = (summary["busy"][name]["images_per_s"]
                                                           / summary["free"][name]["images_per_s"])
        print("busy / free: " + ", ".join(f"{n} {summary['busy'][n]['busy_over_free']:.2f}" for n in names
                                          if "busy_over_free" in summary["busy"].get(n, {})))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(tempfile.gettempdir()) / "skinonnx-bench" / f"train-speed-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "raw": results, "loads": loads, "peak_gflops": peak,
                               "fma_probes": peaks, "limit_images_per_s": limit, "args": {
                                   k: str(v) for k, v in vars(args).items()}}, indent=2) + "\n")
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
