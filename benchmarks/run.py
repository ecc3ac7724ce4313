"""One command, one process: PyTorch eager vs ONNX Runtime fp32 vs INT8, end-to-end predict, training.

    python -m benchmarks.run            # ~2 minutes on 2 idle cores, ~6 under heavy load
    python -m benchmarks.run --quick    # about half that
    python -m benchmarks.run --checkpoint /path/best.pt --data ../shared/data/isic-bm   # real weights + real gate

Prints a table and writes JSON (default: /tmp/skinonnx-bench/bench-<time>.json). The machine is
shared and noisy: ratios measured side by side in this run are the figures that count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SKINONNX_ISIC_DATA") or ROOT.parent / "shared" / "data" / "isic-bm")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="Fewer repeats, images and steps (~1-2 min).")
    p.add_argument("--data", type=Path, default=None,
                   help=f"Real images (split ImageFolder); default {REAL_DATA} if present, else synthetic.")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="A trained skinonnx checkpoint: real weights, and a real INT8 accuracy gate on --data.")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-sizes", default=None, help="Comma-separated inference batch sizes (default 1,8; quick 8).")
    p.add_argument("--repeats", type=int, default=None, help="Timed rounds per measurement (default 7; quick 4).")
    p.add_argument("--e2e-images", type=int, default=None, help="Real JPEGs for end-to-end predict (default 128).")
    p.add_argument("--train-batch", type=int, default=None, help="Training batch size (default 16; quick 8).")
    p.add_argument("--train-steps", type=int, default=None, help="Timed training steps per loop (default 4).")
    p.add_argument("--train-size", type=int, default=None, help="Training image size (default: --image-size).")
    p.add_argument("--threads", type=int, default=None, help="Threads for torch and ORT (default: physical cores).")
    p.add_argument("--peak-gflops", type=float, default=None,
                   help="fp32 FMA peak to divide by instead of measuring it (documented here: 199).")
    p.add_argument("--skip", default="", help="Comma-separated parts to skip: eager,int8,e2e,large,training.")
    p.add_argument("--out", type=Path, default=None, help="JSON results path.")
    args = p.parse_args(argv)
    quick = args.quick
    args.batch_sizes = [int(b) for b in (args.batch_sizes or ("8" if quick else "1,8")).split(",")]
    args.repeats = args.repeats or (4 if quick else 7)
    args.e2e_images = args.e2e_images or (48 if quick else 128)
    args.train_batch = args.train_batch or (8 if quick else 16)
    args.train_steps = args.train_steps or (2 if quick else 4)
    args.train_size = args.train_size or args.image_size
    args.skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    return args


def peak_rss_mb() -> float:
    """Peak resident memory since the last reset_peak_rss() (Linux VmHWM), else since the process started."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM, so each phase reports its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def allocator() -> str:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for name in ("jemalloc", "tcmalloc"):
        if name in maps:
            return name
    return "glibc malloc"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args, self.work = args, workdir
        self.results: dict[str, Any] = {"phases": {}}
        self.t0 = time.perf_counter()

    def log(self, msg: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def phase_start(self) -> None:
        self._per_phase = reset_peak_rss()
        self._usage = resource.getrusage(resource.RUSAGE_SELF)

    def phase_done(self, name: str) -> None:
        now = resource.getrusage(resource.RUSAGE_SELF)
        kernel = now.ru_stime - self._usage.ru_stime
        cpu = kernel + now.ru_utime - self._usage.ru_utime
        self.results["phases"][name] = {
            "peak_rss_mb": peak_rss_mb(), "peak_is_per_phase": self._per_phase,
            "kernel_cpu_share": kernel / cpu if cpu > 0 else 0.0,
            "page_faults": now.ru_minflt - self._usage.ru_minflt, "at_seconds": time.perf_counter() - self.t0}
        self.phase_start()


def prepare_data(args: argparse.Namespace, work: Path) -> tuple[Path, bool]:
    if args.data is not None:
        return args.data, True
    if REAL_DATA.is_dir():
        return REAL_DATA, True
    from skinonnx.data.synthetic import generate_dataset

    root = work / "synthetic"
    generate_dataset(root, counts={"train": 40, "val": 16, "test": 16}, size=256, seed=0, progress=False)
    return root, False


def build_models(bench: Bench, data: Path):
    """(torch model, fp32 ONNX path, INT8 ONNX path or None, gate dict)."""
    import torch

    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.deploy.contract import ModelContract
    from skinonnx.export.onnx_export import export, to_onnx
    from skinonnx.export.quantize import DEFAULT_MAX_AUC_CHANGE, DEFAULT_MIN_AGREEMENT, QuantizeSettings, quantize_model
    from skinonnx.training.model import build_model

    args = bench.args
    fp32_path = bench.work / "model.onnx"
    if args.checkpoint:
        from skinonnx.training.checkpoint import load_checkpoint, model_from_checkpoint

        state = load_checkpoint(args.checkpoint)
        model = model_from_checkpoint(state).eval()
        args.image_size = int(state["preprocessing"]["image_size"])
        bench.log(f"exporting {args.checkpoint} (with its parity check)")
        export(args.checkpoint, fp32_path, data=str(data), parity_images=8, echo=lambda m: None)
    else:
        torch.manual_seed(0)
        model = build_model(2, "none").eval()
        contract = ModelContract(classes=("benign", "malignant"), positive_index=1,
                                 preprocessing=Preprocessing.for_size(args.image_size))
        bench.log("exporting a random-init ResNet50 (no download; speed does not depend on the weights)")
        to_onnx(model, contract, fp32_path, 17)
    int8_path, gate = None, None
    if "int8" not in bench.args.skip:
        real_gate = args.checkpoint is not None
        # Always keep the INT8 file (its speed is measured either way); the gate verdict is computed
        # below with the default limits of `skinonnx quantize` and reported, pass or fail.
        settings = QuantizeSettings(calibration_images=128 if real_gate else 32, min_agreement=0.0,
                                    max_auc_change=1.0, gate_images=0 if real_gate else 16)
        bench.log(f"quantizing (static QDQ INT8, {settings.calibration_images} calibration images)")
        start = time.perf_counter()
        q = quantize_model(fp32_path, bench.work / "model.int8.onnx", data, settings, echo=lambda m: None)
        int8_path = q.path
        verdict = replace(q.gate, min_agreement=DEFAULT_MIN_AGREEMENT, max_auc_change=DEFAULT_MAX_AUC_CHANGE)
        gate = {**verdict.to_dict(), "applies": real_gate, "quantize_seconds": time.perf_counter() - start,
                "calibration_images": q.calibration_images}
    return model, fp32_path, int8_path, gate


def run_inference(bench: Bench, model, fp32_path: Path, int8_path: Path | None, flops: float) -> None:
    from skinonnx.deploy.runtime import OnnxClassifier

    from .inference import eager_variant, interleaved, ort_variant, summarize

    args = bench.args
    fp32 = OnnxClassifier(fp32_path, "cpu", threads=args.threads)
    int8 = OnnxClassifier(int8_path, "cpu", threads=args.threads) if int8_path else None
    rng = np.random.default_rng(0)
    out = {}
    for batch_size in args.batch_sizes:
        batch = rng.standard_normal((batch_size, 3, args.image_size, args.image_size), dtype=np.float32)
        variants = []
        if "eager" not in args.skip:
            variants += [eager_variant("PyTorch eager fp32 (NCHW)", model, batch, channels_last=False),
                         eager_variant("PyTorch eager fp32 channels_last", model, batch, channels_last=True)]
        variants.append(ort_variant("ONNX Runtime fp32", fp32, batch))
        if int8:
            variants.append(ort_variant("ONNX Runtime INT8 (static QDQ)", int8, batch))
        bench.log(f"inference, batch {batch_size}: {len(variants)} variants x {args.repeats} interleaved rounds")
        rates = interleaved(variants, repeats=args.repeats, min_images=8)
        summary = summarize(rates, variants[0].name)
        for row in summary.values():
            row["gflops"] = row["images_per_s"] * flops / 1e9
        out[str(batch_size)] = summary
    bench.results["inference"] = out


def run_end_to_end(bench: Bench, data: Path, fp32_path: Path, int8_path: Path | None) -> None:
    from skinonnx.data.layouts import discover
    from skinonnx.deploy.runtime import OnnxClassifier

    from .endtoend import draft_speedup, end_to_end, make_large_jpegs

    args = bench.args
    found = discover(data, write_split_file=False)
    paths = sorted(s.path for samples in found.splits.values() for s in samples)
    step = max(1, len(paths) // args.e2e_images)
    paths = paths[::step][:args.e2e_images]
    models = {"ONNX Runtime fp32": fp32_path, **({"ONNX Runtime INT8": int8_path} if int8_path else {})}
    e2e: dict[str, Any] = {}
    repeats = 2 if args.quick else 3
    if "e2e" not in args.skip:
        for name, path in models.items():
            classifier = OnnxClassifier(path, "cpu", threads=args.threads)
            bench.log(f"end-to-end predict vs model-only: {name}, {len(paths)} images of {data.name}")
            e2e[name] = end_to_end(classifier, paths, batch_size=16, repeats=repeats)
    if "large" not in args.skip:
        classifier = OnnxClassifier(fp32_path, "cpu", threads=args.threads)
        large = make_large_jpegs(paths, bench.work / "large", count=16)
        bench.log("JPEG draft mode on 4000x3000 originals")
        e2e["draft"] = draft_speedup(large[:4], classifier.preprocessing)
        e2e["ONNX Runtime fp32, 4000x3000 JPEGs"] = end_to_end(classifier, large, batch_size=8, repeats=2)
    bench.results["end_to_end"] = e2e


def run_training(bench: Bench, data: Path) -> None:
    from skinonnx.data.layouts import discover

    from .training import training_throughput

    args = bench.args
    samples = discover(data, write_split_file=False).split("train")
    n = args.train_batch * (args.train_steps + 2)
    samples = samples[:: max(1, len(samples) // n)][:n]
    bench.log(f"training at {args.train_size}px, batch {args.train_batch}: plain vs skinonnx, "
              f"{args.train_steps} interleaved steps each")
    bench.results["training"] = {"image_size": args.train_size, "batch_size": args.train_batch,
                                 "loops": training_throughput(samples, args.train_size, batch_size=args.train_batch,
                                                              steps=args.train_steps)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from skinonnx.cpus import passive_openmp_wait
    from skinonnx.training.allocator import keep_freed_memory

    malloc_note = keep_freed_memory()  # as `train` does, before torch allocates (SKINONNX_MALLOC=system: off)
    passive_openmp_wait()
    import onnxruntime
    import torch

    from skinonnx.cpus import physical_cores

    from .peak import DOCUMENTED_FMA_PEAK_GFLOPS, forward_flops, measure_fma_peak, measure_sgemm
    from .report import format_table

    args.threads = args.threads or physical_cores()
    torch.set_num_threads(args.threads)
    out = args.out or Path(tempfile.gettempdir()) / "skinonnx-bench" / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    with tempfile.TemporaryDirectory(prefix="skinonnx-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        bench.phase_start()
        data, real = prepare_data(args, bench.work)
        bench.results["setup"] = {
            "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "allocator": allocator(), "malloc": malloc_note,
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "ld_preload": os.environ.get("LD_PRELOAD", ""),
            "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "data": str(data),
            "real_images": real, "checkpoint": str(args.checkpoint) if args.checkpoint else None,
            "quick": args.quick, "repeats": args.repeats, "load_average_start": os.getloadavg()}
        bench.log(f"measuring the fp32 FMA peak and SGEMM ({args.threads} threads)")
        fma = [measure_fma_peak(args.threads)]
        sgemm = measure_sgemm(args.threads)
        model, fp32_path, int8_path, gate = build_models(bench, data)
        flops = forward_flops(model, args.image_size)
        bench.results["setup"]["image_size"] = args.image_size
        bench.results["int8_gate"] = gate
        bench.phase_done("setup")
        run_inference(bench, model, fp32_path, int8_path, flops)
        bench.phase_done("inference")
        fma.append(measure_fma_peak(args.threads))  # again after inference: the peak is the best of both
        measured = max((f for f in fma if f), default=None)
        peak = args.peak_gflops or measured or DOCUMENTED_FMA_PEAK_GFLOPS
        bench.results["peak"] = {
            "fma_measured_gflops": measured, "fma_probes": fma, "documented_fma_gflops": DOCUMENTED_FMA_PEAK_GFLOPS,
            "sgemm_gflops": sgemm, "divisor_gflops": peak,
            "divisor": "--peak-gflops" if args.peak_gflops else ("measured FMA peak" if measured else "documented"),
            "forward_gflop_per_image": flops / 1e9, "forward_limit_images_per_s": peak * 1e9 / flops,
            "documented_forward_limit_images_per_s": DOCUMENTED_FMA_PEAK_GFLOPS * 1e9 / flops}
        for rows in bench.results["inference"].values():
            for row in rows.values():
                row["fraction_of_limit"] = row["gflops"] / peak
                row["fraction_of_documented_limit"] = row["gflops"] / DOCUMENTED_FMA_PEAK_GFLOPS
        if not {"e2e", "large"} <= args.skip:
            run_end_to_end(bench, data, fp32_path, int8_path)
            bench.phase_done("end_to_end")
        if "training" not in args.skip:
            del model
            run_training(bench, data)
            bench.phase_done("training")
        bench.results["setup"]["load_average_end"] = os.getloadavg()
        bench.results["setup"]["seconds"] = time.perf_counter() - bench.t0
    print(format_table(bench.results))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bench.results, indent=2, default=str) + "\n")
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
