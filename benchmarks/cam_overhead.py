"""What the `cam` output costs an app that does not ask for it, and one that does.

ONNX Runtime runs every node of the graph whatever outputs ``run()`` names (its profiler lists
the cam nodes in a ``run(["probabilities"])`` call; tests/export/test_cam.py checks that), so
the honest question is how much the three extra nodes (Mul, ReduceSum on layer4's maps) cost.
Three sessions, interleaved round by round in one process:

* the same ResNet50 exported without the output (``export --no-cam``), asked for probabilities;
* with the output, asked for probabilities only;
* with the output, asked for probabilities and cam.

    python -m benchmarks.cam_overhead [--size 224] [--batch 8] [--rounds 15] [--threads 2]

Prints median milliseconds per batch and the ratios; weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def export_pair(folder: Path, size: int) -> tuple[Path, Path]:
    import torch

    from skinonnx.export.onnx_export import ExportWrapper
    from skinonnx.training.model import build_model

    torch.manual_seed(0)
    model = build_model(2, weights="none").eval()
    paths = []
    for cam in (False, True):
        names = ["logits", "probabilities"] + (["cam"] if cam else [])
        path = folder / f"model_{'cam' if cam else 'plain'}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(ExportWrapper(model, 1.0, 1 if cam else None), (torch.zeros(2, 3, size, size),),
                              str(path), dynamo=False, opset_version=17, input_names=["input"], output_names=names,
                              dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}})
        paths.append(path)
    return paths[0], paths[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    from skinonnx.deploy.runtime import create_session

    with tempfile.TemporaryDirectory() as tmp:
        plain, with_cam = export_pair(Path(tmp), args.size)
        sessions = {"no cam in graph": (create_session(plain, "cpu", threads=args.threads)[0], ["probabilities"]),
                    "cam in graph, not asked": (create_session(with_cam, "cpu", threads=args.threads)[0],
                                                ["probabilities"]),
                    "cam in graph, asked": (create_session(with_cam, "cpu", threads=args.threads)[0],
                                            ["probabilities", "cam"])}
        x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for session, outputs in sessions.values():  # warm-up
            session.run(outputs, {"input": x})
        for _ in range(args.rounds):
            for name, (session, outputs) in sessions.items():
                t0 = time.perf_counter()
                session.run(outputs, {"input": x})
                times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["no cam in graph"])
    print(f"ResNet50 {args.size}px, batch {args.batch}, {args.rounds} interleaved rounds (median ms per batch):")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"  {name:<26} {1000 * med:8.1f} ms   x {med / base:.4f}")


if __name__ == "__main__":
    main()
