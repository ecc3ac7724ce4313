"""Training throughput on one CUDA GPU: the `train` path (AMP + channels_last, DataLoader workers) eager vs
torch.compile, and the model alone (batches already on the GPU), with the data-time fraction.

    python -m benchmarks.gpu_train                       # ResNet50, 224 px, batch 256, ~5-8 min on an H200
    python -m benchmarks.gpu_train --device cpu --image-size 32 --batch-size 4 --steps 2 --images 16   # smoke run

Prepared for a machine with a GPU (goal: >= 2,000 img/s for ResNet50 at 224 px on an H200-class GPU,
data loading not the bottleneck). Images: generated lesions (JPEG, 256 px) decoded once into the
training cache, augmented on the CPU by DataLoader workers exactly as `train` does. Variants,
each a fresh model with the same seed:

* ``model-only eager``: one random batch resident on the GPU, AMP fp16 + channels_last;
* ``model-only compiled``: the same through ``torch.compile`` (compile time reported);
* ``train path eager`` / ``train path compiled``: batches from the DataLoader (pinned memory,
  non-blocking copies), data-time fraction = time waiting for the next batch / step time.

Times are taken with ``torch.cuda.synchronize()`` around the measured window; prints a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def measure(step, batches, steps: int, warmup: int, device) -> dict:
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step(*next(batches))
    sync()
    waited, images = 0.0, 0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        x, y = next(batches)
        waited += time.perf_counter() - t0
        step(x, y)
        images += len(y)
    sync()
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "data_time_fraction": waited / seconds, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=30, help="Timed steps per variant.")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--images", type=int, default=2048, help="Generated training images (256 px JPEGs).")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: as `train`).")
    p.add_argument("--skip", default="", help="Comma-separated: model-only, train-path, compiled.")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from skinonnx.cpus import passive_openmp_wait

    passive_openmp_wait()
    import torch
    from torch import nn

    from skinonnx.data.layouts import discover
    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.data.synthetic import generate_dataset
    from skinonnx.training.compile import CompiledSteps
    from skinonnx.training.device import amp_dtype, configure_threads
    from skinonnx.training.loaders import ImageCache, LesionDataset, default_workers, make_loader
    from skinonnx.training.loop import TrainConfig, make_optimizer, train_step
    from skinonnx.training.model import build_model

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    configure_threads(None)
    dtype = amp_dtype(device, True)
    info = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "precision": str(dtype), "image_size": args.image_size, "batch_size": args.batch_size}
    print(json.dumps(info), file=sys.stderr, flush=True)
    results: dict[str, dict] = {}

    def fresh(compiled: bool):
        torch.manual_seed(0)
        model = build_model(2, "none").to(device).to(memory_format=torch.channels_last).train()
        optimizer = make_optimizer(TrainConfig(weights="none", name="bench"), model)
        scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
        runner, seconds = model, None
        if compiled:
            runner = CompiledSteps(model, args.batch_size)
            seconds = runner.warm_up(args.image_size, device, channels_last=True, dtype=dtype)
        criterion = nn.CrossEntropyLoss()

        def step(x, y) -> None:
            train_step(runner, x, y, criterion, optimizer, device, scaler=scaler, amp=dtype is not None,
                       channels_last=True, dtype=dtype)

        return step, seconds

    variants = [("eager", False)] + ([] if "compiled" in skip else [("compiled", True)])

    def run_all(label: str, batches) -> None:
        for name, compiled in variants:
            step, seconds = fresh(compiled)
            row = measure(step, batches(), args.steps, args.warmup, device)
            row["compile_seconds"] = seconds
            results[f"{label} {name}"] = row
            print(f"{label} {name}: {row}", file=sys.stderr, flush=True)

    if "model-only" not in skip:
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 2, (args.batch_size,), device=device)

        def resident():
            while True:
                yield x, y

        run_all("model-only", resident)
    if "train-path" not in skip:
        with tempfile.TemporaryDirectory(prefix="skinonnx-gpu-") as tmp:
            per_class = max(2, args.images // 2)
            generate_dataset(Path(tmp), counts={"train": per_class, "val": 1, "test": 1}, size=256, seed=0,
                             progress=False)
            prep = Preprocessing.for_size(args.image_size)
            cache = ImageCache(prep)
            samples, _ = cache.fill(discover(tmp, write_split_file=False).split("train"), progress=False)
            workers = default_workers(device) if args.workers is None else args.workers
            loader = make_loader(LesionDataset(samples, cache, train=True), batch_size=args.batch_size, shuffle=True,
                                 workers=workers, seed=0, device=device)
            info["workers"] = workers

            def from_loader():
                while True:
                    for xb, yb in loader:
                        if len(yb) == args.batch_size:
                            yield xb, yb

            run_all("train path", from_loader)
    print(f"{info['device']}, ResNet50 {args.image_size} px, batch {args.batch_size}, {info['precision']}, "
          f"channels_last")
    print(f"{'variant':<22} {'img/s':>8} {'data':>6} {'compile s':>9}")
    for name, row in results.items():
        compile_s = f"{row['compile_seconds']:.0f}" if row["compile_seconds"] is not None else "-"
        print(f"{name:<22} {row['images_per_s']:>8.0f} {row['data_time_fraction']:>6.1%} {compile_s:>9}")
    eager, compiled = results.get("train path eager"), results.get("train path compiled")
    if eager and compiled and compiled["images_per_s"] > eager["images_per_s"]:
        saved = args.batch_size / eager["images_per_s"] - args.batch_size / compiled["images_per_s"]
        print(f"compile pays after {compiled['compile_seconds'] / saved:.0f} steps "
              "(BREAK_EVEN_STEPS['cuda'] in skinonnx/training/compile.py)")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out or Path(tempfile.gettempdir()) / "skinonnx-bench" / f"gpu-train-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": info, "results": results}, indent=2) + "\n")
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
