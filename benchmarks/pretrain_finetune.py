"""A dermoscopy-pretrained backbone on a small set (issue 30): from scratch vs the backbone fine-tuned staged vs plain.

  python -m benchmarks.pretrain_finetune --from-run /work/bench/runs/ham10000-k7 --out /work/bench/p30 \
      --data ../shared/data/isic-bm [--data ../shared/data/isic2017] --epochs 10 --image-size 64

Steps, each through the CLI and timed (wall clock on this machine): `pretrain --from-run` (the backbone, its card
and pretraining-image fingerprints); per data set the pretraining leakage check (the fine-tuning set's val/test
images against the backbone's pretraining images; any copy found is left out of all three runs through an
exclusion list); then three `train` runs on the same settings: (a) `--weights none`, (b) `--weights BACKBONE
--fine-tune staged`, (c) `--weights BACKBONE --fine-tune plain`; `export` and `test` of each; `compare` (b) vs (a)
and (c) vs (a) for the paired bootstrap CI of the test AUC difference. The scratch arm does not depend on the
backbone: copy OUT/runs/NAME-a, OUT/NAME/a.onnx and OUT/NAME/test-a from an earlier OUT to reuse it.
Results: OUT/results.json, a Markdown table on stdout (docs/TRAINING.md quotes it). Outputs go under OUT, never
into the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ARMS = {"a": ("scratch", ["--weights", "none"]), "b": ("backbone, staged", ["--fine-tune", "staged"]),
        "c": ("backbone, plain", ["--fine-tune", "plain"])}


def _cli(args: list[str], log: Path) -> float:
    """Run ``cli.py ARGS`` (nice'd, this checkout first on PYTHONPATH), its output into ``log``; wall seconds."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(["nice", sys.executable, str(REPO / "cli.py"), *args], cwd=REPO, env=env, stdout=out,
                              stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): cli.py {' '.join(args)}; see {log}")
    return seconds


def _leak_check(data: str, backbone: Path, out: Path) -> tuple[dict[str, Any], Path | None, float]:
    """The pretraining leakage check alone (as `train` runs it), and an exclusion list of the copies found."""
    sys.path.insert(0, str(REPO))
    from skinonnx.data.layouts import discover
    from skinonnx.data.pretraining import read_card, read_images, seen_pairs

    start = time.perf_counter()
    found = discover(data, write_split_file=False)
    card = read_card(backbone)
    pairs = seen_pairs(found, read_images(backbone, card))
    seconds = time.perf_counter() - start
    record = {"pairs": len(pairs), "pretraining_images": card["pretraining_images"],
              "examples": [f"{p['path']} = {p['pretraining_path']} ({p['distance']} bits)" for p in pairs[:10]]}
    if not pairs:
        return record, None, seconds
    root = found.root.resolve()
    listing = out / "exclude-pretraining-copies.txt"
    listing.write_text("# images the backbone was pretrained on (benchmarks/pretrain_finetune.py)\n" + "".join(
        f"{Path(p['path']).resolve().relative_to(root).as_posix()}\n" for p in pairs))
    return record, listing, seconds


def _auc(summary: Path) -> tuple[float, list[float]]:
    doc = json.loads(summary.read_text())
    return doc["metrics"]["roc_auc"], doc["ci"]["roc_auc"]


def _difference(compare_json: Path, mine: Path) -> dict[str, Any]:
    """``mine`` minus the other model's test AUC with its paired bootstrap CI, from a two-model compare.json."""
    doc = json.loads(compare_json.read_text())
    rows = doc["models"] if isinstance(doc, dict) else doc
    other = next(r for r in rows if r.get("vs_best"))
    sign = 1.0 if Path(other["path"]).resolve() == mine.resolve() else -1.0
    diff, ci = other["vs_best"]["difference"], other["vs_best"]["ci"]
    low, high = (sign * ci[0], sign * ci[1]) if sign > 0 else (-ci[1], -ci[0])
    return {"difference": sign * diff, "ci": [low, high], "images": other["vs_best"]["images"]}


def run_data(data: str, backbone: Path, out: Path, common: list[str]) -> dict[str, Any]:
    name = Path(data).name
    folder = out / name
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"data": data, "arms": {}}
    result["leakage"], exclude, result["leakage_seconds"] = _leak_check(data, backbone, folder)
    extra = ["--exclude-list", str(exclude)] if exclude else []
    onnx: dict[str, Path] = {}
    for key, (label, options) in ARMS.items():
        run = f"{name}-{key}"
        weights = [] if key == "a" else ["--weights", str(backbone)]
        arm: dict[str, Any] = {"label": label}
        onnx[key], report = folder / f"{key}.onnx", folder / f"test-{key}"
        if (report / "summary.json").is_file() and key == "a":  # the scratch arm does not depend on the backbone:
            arm["reused"] = True                                  # one copied from an earlier OUT is kept
        else:
            arm["train_s"] = _cli(["train", "--data", data, *weights, *options, *common, *extra, "--name", run,
                                   "--runs-dir", str(out / "runs")], folder / "logs" / f"train-{key}.log")
            arm["export_s"] = _cli(["export", "--checkpoint", str(out / "runs" / run), "-o", str(onnx[key]),
                                    "--data", data, "--no-cam", "--no-ood", "--parity-images", "8"],
                                   folder / "logs" / f"export-{key}.log")
            arm["test_s"] = _cli(["test", "--onnx", str(onnx[key]), "--data", data, "-o", str(report), "--quiet"],
                                 folder / "logs" / f"test-{key}.log")
        arm["test_auc"], arm["test_auc_ci"] = _auc(report / "summary.json")
        metrics = (out / "runs" / run / "metrics.csv").read_text().splitlines()
        header = metrics[0].split(",")
        arm["best_val_auc"] = max(float(row.split(",")[header.index("val_auc")]) for row in metrics[1:])
        result["arms"][key] = arm
    for key in ("b", "c"):
        target = folder / f"compare-{key}-vs-a"
        seconds = _cli(["compare", str(onnx["a"]), str(onnx[key]), "--data", data, "-o", str(target), "--quiet"],
                       folder / "logs" / f"compare-{key}.log")
        result[f"{key}_minus_a"] = {**_difference(target / "compare.json", onnx[key]), "compare_s": seconds}
    return result


def table(results: dict[str, Any]) -> str:
    lines = [f"backbone: `pretrain --from-run` {results['pretrain_s']:.0f} s", "",
             "| data | arm | test AUC [95 % CI] | best val AUC | train | export | test |",
             "|---|---|---|---|---|---|---|"]
    for entry in results["data"]:
        for key, arm in entry["arms"].items():
            lo, hi = arm["test_auc_ci"]
            took = " | ".join(f"{arm[k]:.0f} s" if k in arm else "reused" for k in ("train_s", "export_s", "test_s"))
            lines.append(f"| {Path(entry['data']).name} | ({key}) {arm['label']} | {arm['test_auc']:.3f} "
                         f"[{lo:.3f}, {hi:.3f}] | {arm['best_val_auc']:.3f} | {took} |")
        for key in ("b", "c"):
            d = entry[f"{key}_minus_a"]
            lines.append(f"| {Path(entry['data']).name} | ({key}) − (a) | {d['difference']:+.3f} "
                         f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}] paired, {d['images']} images | | | | |")
        leak = entry["leakage"]
        lines.append(f"| {Path(entry['data']).name} | leakage check | {leak['pairs']} of val/test among "
                     f"{leak['pretraining_images']} pretraining images ({entry['leakage_seconds']:.0f} s) | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-run", required=True, help="A finished K-class pretraining run (e.g. HAM10000).")
    parser.add_argument("--out", type=Path, required=True, help="Output folder (outside the repository).")
    parser.add_argument("--data", action="append", required=True, help="A fine-tuning data set (repeatable).")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    backbone = args.out / "backbone.pt"
    results: dict[str, Any] = {"from_run": args.from_run, "epochs": args.epochs, "image_size": args.image_size}
    results["pretrain_s"] = _cli(["pretrain", "--from-run", args.from_run, "-o", str(backbone), "--quiet"],
                                 args.out / "logs" / "pretrain.log")
    common = ["--epochs", str(args.epochs), "--image-size", str(args.image_size), "--scheduler", "cosine",
              "--early-stop", "0", "--seed", str(args.seed), "--quiet"]
    results["common"] = common
    results["data"] = []
    for data in args.data:
        results["data"].append(run_data(data, backbone, args.out, common))
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
        print(table(results), flush=True)


if __name__ == "__main__":
    main()
