"""Cost of a fold ensemble: images/s of the K-member ONNX file vs one member, with flip TTA, and INT8.

    python -m benchmarks.ensemble --run runs/NAME --data DIR [--int8 exports/model.int8.onnx]

Builds (without parity, into a temp folder) the member fold-0 alone, the K-member ensemble and the
ensemble with flip TTA from the run's checkpoints; runs them interleaved round by round on the
same real preprocessed batch (so load from other processes hits all alike) and reports:

* ensemble efficiency = ensemble images/s ÷ (member images/s ÷ K): 1.0 means the ensemble costs
  exactly its K members (the goal is >= 0.95); flip TTA's ideal is 0.5 of the ensemble;
* INT8 ensemble ÷ fp32 ensemble (pass a quantized file that passed its gate: `quantize`);
* peak resident memory of a process that opens each file and runs one batch (separate processes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .inference import Variant, interleaved
from .peak import median


def _peak_child(model: str, batch: int) -> None:
    """Child process: open ``model``, run one batch, print peak RSS in MB (VmHWM)."""
    from skinonnx.deploy.runtime import OnnxClassifier

    clf = OnnxClassifier(model, "cpu")
    size = clf.preprocessing.image_size
    clf.predict_arrays(np.zeros((batch, 3, size, size), np.float32))
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            print(int(line.split()[1]) / 1024.0)
            return
    print("nan")


def peak_mb(model: Path, batch: int) -> float:
    out = subprocess.run([sys.executable, "-m", "benchmarks.ensemble", "--peak-child", str(model), "--batch",
                          str(batch)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def build(run: Path, work: Path) -> dict[str, Path]:
    from skinonnx.export.ensemble import export_cv_run
    from skinonnx.export.onnx_export import export

    quiet = dict(parity_images=0, echo=lambda _m: None)
    paths = {"member (fold 0)": work / "member.onnx", "ensemble": work / "ens.onnx",
             "ensemble + flip TTA": work / "ens-flip.onnx"}
    export(run / "fold-0" / "weights" / "best.pt", paths["member (fold 0)"], **quiet)
    export_cv_run(run, paths["ensemble"], **quiet)
    export_cv_run(run, paths["ensemble + flip TTA"], tta="flip", **quiet)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="cross-validation run folder (runs/NAME)")
    parser.add_argument("--data", help="real images (the val split is used)")
    parser.add_argument("--int8", type=Path, default=None, help="a gated INT8 copy of the ensemble")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("/tmp/skinonnx-bench/ensemble.json"))
    parser.add_argument("--peak-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_child:
        _peak_child(args.peak_child, args.batch)
        return 0
    if args.run is None or args.data is None:
        parser.error("--run and --data are required")

    from skinonnx.data.layouts import discover
    from skinonnx.deploy.runtime import OnnxClassifier
    from skinonnx.export.parity import load_parity_images
    from skinonnx.training.cv_record import read_cv

    k = int(read_cv(args.run)["folds"])
    with tempfile.TemporaryDirectory(prefix="skinonnx-ens-bench-") as tmp:
        paths = build(args.run, Path(tmp))
        if args.int8 is not None:
            paths["INT8 ensemble"] = args.int8
        classifiers = {name: OnnxClassifier(p, "cpu") for name, p in paths.items()}
        prep = next(iter(classifiers.values())).preprocessing
        found = discover(args.data, write_split_file=False)
        batch = load_parity_images([s.path for s in found.split("val")], prep, args.batch)
        variants = [Variant(name, (lambda c=c: c.predict_arrays(batch)), len(batch)) for name, c in classifiers.items()]
        rates = interleaved(variants, repeats=args.rounds, min_images=args.batch)
        peaks = {name: peak_mb(p, args.batch) for name, p in paths.items()}
    ips = {name: median(r) for name, r in rates.items()}
    member, ens = ips["member (fold 0)"], ips["ensemble"]
    result = {
        "members": k, "image_size": prep.image_size, "batch": args.batch, "rounds": args.rounds,
        "images_per_s": ips, "peak_rss_mb": peaks,
        "ensemble_efficiency": ens / (member / k),  # 1.0 = exactly K members' cost
        "flip_tta_vs_ensemble": ips["ensemble + flip TTA"] / ens,  # ideal 0.5
        "int8_vs_fp32_ensemble": ips["INT8 ensemble"] / ens if "INT8 ensemble" in ips else None,
        "spread": {name: (max(r) - min(r)) / median(r) for name, r in rates.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"K = {k}, {prep.image_size} px, batch {args.batch}, {args.rounds} interleaved rounds (median images/s)")
    for name, value in ips.items():
        print(f"  {name:<22} {value:8.2f} images/s   peak RSS {peaks[name]:7.0f} MB")
    print(f"  ensemble efficiency (ensemble ÷ (member ÷ K)): {result['ensemble_efficiency']:.3f}  (goal >= 0.95)")
    print(f"  flip TTA ÷ ensemble: {result['flip_tta_vs_ensemble']:.3f}  (ideal 0.5)")
    if result["int8_vs_fp32_ensemble"] is not None:
        print(f"  INT8 ÷ fp32 ensemble: {result['int8_vs_fp32_ensemble']:.2f}  (goal >= 1.8)")
    print(f"JSON: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
