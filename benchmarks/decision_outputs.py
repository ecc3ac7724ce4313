"""What the decision outputs (``label``, ``in_distribution``) cost: the same graph with and without them.

The decision is a Gather, comparisons and a Where per image after ``probabilities`` and ``ood_score``
(skinonnx/export/decision.py). Two sessions of one ResNet50 with the ``ood_score`` head, interleaved round
by round in one process, each asked for everything it outputs:

* without the decision nodes (the file as exported before them), asked for probabilities and ood_score;
* with them, asked for probabilities, ood_score, label and in_distribution.

    python -m benchmarks.decision_outputs [--size 224] [--batches 1,8] [--rounds 15] [--threads 2]

Prints median milliseconds per batch and the ratio (goal: <= 1.01); weights are random. On a shared, noisy
machine the wall-clock ratio wanders by more than the nodes cost, so it also prints ONNX Runtime's own profile
of the decided graph: the share of node time spent in the ``decision/...`` nodes, which load does not skew.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def export_pair(folder: Path, size: int) -> tuple[Path, Path]:
    """The same traced graph twice: as traced, and with the decision nodes appended (export's own code)."""
    import warnings

    import onnx
    import torch

    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.deploy.contract import OOD_OUTPUT, OOD_THRESHOLD_KEY, OUTPUT_NAMES, ModelContract
    from skinonnx.export.decision import add_decision_outputs
    from skinonnx.export.onnx_export import ExportWrapper
    from skinonnx.export.ood import MahalanobisHead, OodOutput, OodScore, fit_gaussians
    from skinonnx.training.model import build_model

    torch.manual_seed(0)
    model = build_model(2, weights="none").eval()
    rng = np.random.default_rng(0)
    fit = fit_gaussians(rng.standard_normal((200, 2048)), rng.integers(0, 2, 200))
    wrapper = ExportWrapper(model, 1.0)
    OodOutput(wrapper, [model], OodScore([MahalanobisHead(fit)]))
    names = [*OUTPUT_NAMES, OOD_OUTPUT]
    plain = folder / "plain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (torch.zeros(2, 3, size, size),), str(plain), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=names,
                          dynamic_axes={"input": {0: "batch"}, **{n: {0: "batch"} for n in names}})
    contract = ModelContract(("benign", "malignant"), 1, Preprocessing.for_size(size), threshold=0.4,
                             output_names=tuple(names), extra={OOD_THRESHOLD_KEY: "1.5"})
    proto = onnx.load(str(plain))
    add_decision_outputs(proto, contract)
    decided = folder / "decided.onnx"
    onnx.save(proto, str(decided))
    return plain, decided


def profiled_share(model: Path, x: np.ndarray, rounds: int, threads: int | None) -> float:
    """Share of the profiled node time spent in ``decision/...`` nodes over ``rounds`` runs."""
    import json

    import onnxruntime as ort

    from skinonnx.deploy.runtime import session_options

    opts = session_options(threads)
    opts.enable_profiling = True
    opts.profile_file_prefix = str(model.with_suffix(""))
    session = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
    for _ in range(rounds):
        session.run(None, {"input": x})
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    total = sum(e["dur"] for e in nodes)
    return sum(e["dur"] for e in nodes if e["name"].startswith("decision/")) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    from skinonnx.deploy.runtime import create_session

    with tempfile.TemporaryDirectory() as tmp:
        plain, decided = export_pair(Path(tmp), args.size)
        sessions = {"without decision outputs": create_session(plain, "cpu", threads=args.threads)[0],
                    "with label, in_distribution": create_session(decided, "cpu", threads=args.threads)[0]}
        print(f"ResNet50 + ood_score head, {args.size}px, {args.rounds} interleaved rounds (median ms per batch):")
        for batch in (int(b) for b in args.batches.split(",")):
            x = np.random.default_rng(batch).standard_normal((batch, 3, args.size, args.size)).astype(np.float32)
            times: dict[str, list[float]] = {name: [] for name in sessions}
            for session in sessions.values():  # warm-up
                session.run(None, {"input": x})
            for _ in range(args.rounds):
                for name, session in sessions.items():
                    t0 = time.perf_counter()
                    session.run(None, {"input": x})
                    times[name].append(time.perf_counter() - t0)
            base = statistics.median(times["without decision outputs"])
            for name, values in times.items():
                med = statistics.median(values)
                print(f"  batch {batch:>2}  {name:<30} {1000 * med:8.1f} ms   x {med / base:.4f}")
            share = profiled_share(decided, x, args.rounds, args.threads)
            print(f"  batch {batch:>2}  ONNX Runtime profile: decision nodes take {share:.4%} of node time")


if __name__ == "__main__":
    main()
