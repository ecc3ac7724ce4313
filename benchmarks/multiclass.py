"""A K-class model on a held-out split: balanced accuracy, per-class AUC and sensitivity with CIs, the
malignancy AUC, and what the stored class bias changes (docs/EVALUATION.md's HAM10000 table).

    python -m benchmarks.multiclass --run runs/<name> --data ../shared/data/ham10000/index.csv

1. ``export`` the run's best checkpoint (unless ``--onnx`` names a file already exported from it);
2. ``predict`` the ``--split`` images of the index CSV through ONNX Runtime (the graph decides: ``label``);
3. score the graph's decisions (``label``, before the OOD refusal, which is counted apart) and, on the same
   probabilities, plain argmax (no class bias), each with a stratified bootstrap CI
   (:mod:`skinonnx.evaluation.multiclass_metrics`); the decision rule is the one in
   :mod:`skinonnx.deploy.decision` (a zero bias is argmax).

Prints a Markdown table and the wall time of each step, and writes JSON beside the predictions
(default folder /tmp/skinonnx-bench/multiclass-<time>/).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.multiclass", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="A finished K-class training run folder.")
    p.add_argument("--data", type=Path, required=True, help="The index CSV (path,label,split,...).")
    p.add_argument("--split", default="test")
    p.add_argument("--onnx", type=Path, default=None, help="Use this export of the run instead of exporting.")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def _cli(*args: str) -> float:
    """Run ``cli.py ARGS`` in a subprocess (as a user would); its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], check=True)
    return time.perf_counter() - start


def _split_manifest(index_csv: Path, split: str, out: Path) -> dict[str, str]:
    """A predict manifest of the split's images (absolute paths); returns {path: true label}."""
    with index_csv.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("split", "") == split]
    if not rows:
        raise SystemExit(f"{index_csv}: no images in split {split!r}")
    truth = {str((index_csv.parent / r["path"]).resolve()): r["label"] for r in rows}
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path"])
        writer.writerows([p] for p in truth)
    return truth


def _fmt(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from skinonnx.deploy.decision import DecisionRule, biased_decision
    from skinonnx.deploy.runtime import OnnxClassifier
    from skinonnx.evaluation.multiclass_metrics import evaluate_multiclass

    args = parse_args(argv)
    out = args.out or Path(tempfile.gettempdir()) / "skinonnx-bench" / f"multiclass-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    onnx_path = args.onnx or out / "model.onnx"
    if args.onnx is None:
        times["export_s"] = _cli("export", "--checkpoint", str(args.run / "weights" / "best.pt"), "-o",
                                 str(onnx_path), "--data", str(args.data), "--runs-dir", str(args.run.parent))
    truth = _split_manifest(args.data, args.split, out / "manifest.csv")
    predictions = out / "predictions.csv"
    times["predict_s"] = _cli("predict", str(out / "manifest.csv"), "--onnx", str(onnx_path), "-o",
                              str(predictions), "--quiet")
    contract = OnnxClassifier(onnx_path, "cpu").contract
    classes = list(contract.classes)
    rule = DecisionRule.of(contract)
    with predictions.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if str(Path(r["path"]).resolve()) in truth]  # skipped files: no row
    y = np.array([classes.index(truth[str(Path(r["path"]).resolve())]) for r in rows])
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float32)
    graph_label = np.array([classes.index(r["label"]) for r in rows])  # the graph's class, before any refusal
    refused = np.array([r.get("in_distribution") in ("False", "false", "0") for r in rows])
    graph_matches_rule = bool(np.array_equal(graph_label, rule.labels(probs)))
    with np.errstate(divide="ignore"):  # a probability of 0 is log -inf: never the argmax, as in the graph
        argmax = biased_decision(np.log(probs.astype(np.float64)), np.zeros(len(classes)))
    group = list(rule.group)
    result = {
        "onnx": str(onnx_path), "split": args.split, "n": len(rows), "refused": int(refused.sum()),
        "class_bias": list(contract.class_bias or []), "malignant_classes": [classes[i] for i in group],
        "threshold": contract.threshold, "graph_label_equals_rule": graph_matches_rule, "times": times,
        **{name: evaluate_multiclass(y, probs, decided, classes, malignant=group, threshold=contract.threshold,
                                     bootstrap=args.bootstrap)
           for name, decided in (("graph", graph_label), ("argmax", argmax))},
    }
    (out / "multiclass.json").write_text(json.dumps(result, indent=2, default=float))
    _print_table(result, classes)
    print(f"JSON: {out / 'multiclass.json'}")
    return result


def _print_table(result: dict[str, Any], classes: list[str]) -> None:
    g, a = result["graph"], result["argmax"]
    print(f"{result['split']}: {result['n']} images, {result['refused']} would be refused (scored anyway); "
          f"graph label == rule: {result['graph_label_equals_rule']}; times {result['times']}")
    print("| metric | graph (class bias) | argmax |\n|---|---|---|")
    for name in ("balanced_accuracy", "accuracy", "macro_auc"):
        print(f"| {name} | {_fmt(g['metrics'][name], g['ci'][name])} | {_fmt(a['metrics'][name], a['ci'][name])} |")
    m, mci = g["metrics"]["malignant"], g["ci"]["malignant"]
    print(f"| malignancy AUC ({', '.join(result['malignant_classes'])}) | {_fmt(m['roc_auc'], mci['roc_auc'])} | "
          "same probabilities |")
    for c in classes:
        pg, pa = g["metrics"]["per_class"][c], a["metrics"]["per_class"][c]
        cg, ca = g["ci"]["per_class"][c], a["ci"]["per_class"][c]
        print(f"| {c} (n={pg['n']}) AUC | {_fmt(pg['auc'], cg['auc'])} | |")
        print(f"| {c} sensitivity | {_fmt(pg['sensitivity'], cg['sensitivity'])} | "
              f"{_fmt(pa['sensitivity'], ca['sensitivity'])} |")


if __name__ == "__main__":
    main()
