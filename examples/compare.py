#!/usr/bin/env python3
"""Run the examples on the same images as `python cli.py predict` and print how far they differ.

    python examples/compare.py MODEL.onnx IMAGE [IMAGE ...]

The numbers in docs/EMBEDDING.md ("What to expect from another decoder or resizer") come
from this script. What to expect (tests/deploy/test_embedding.py and test_readme_snippet.py hold these):
python_minimal.py 0 (the same pixels); node --resize pillow 0 where no JPEG draft decoding is
needed, else a few 1e-3 (the draft is approximated: 3.3e-3 measured on a 224-px model, 1.1e-3 on a
64-px one); node --resize sharp a few 1e-3 (another resizer). The tests allow 0.02 for both.
The Node rows need `node` and `npm ci --ignore-scripts --prefix examples/node`.
Use it to check your own port: give it your images and compare your program's output likewise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def json_lines(command: list[str]) -> dict[str, dict]:
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} ... failed:\n{done.stderr}")
    return {row["path"]: row for row in map(json.loads, done.stdout.splitlines())}


def main(model: str, images: list[str]) -> None:
    images = [str(Path(p).resolve()) for p in images]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predict.json"
        subprocess.run([sys.executable, str(ROOT / "cli.py"), "predict", "--onnx", model, *images, "-o", str(out),
                        "--quiet", "--provider", "cpu"], check=True, capture_output=True, cwd=ROOT)
        reference = {row["path"]: row for row in json.loads(out.read_text())["predictions"]}
    runs = {"python_minimal.py": [sys.executable, str(ROOT / "examples" / "python_minimal.py"), model, *images]}
    node = shutil.which("node")
    if node and (ROOT / "examples" / "node" / "node_modules").is_dir():
        for mode in ("pillow", "sharp"):
            runs[f"node --resize {mode}"] = [node, str(ROOT / "examples" / "node" / "index.js"), model, *images,
                                             "--resize", mode]
    else:
        print("(node or examples/node/node_modules missing: Node rows skipped)")
    results = {name: json_lines(command) for name, command in runs.items()}
    base = results["python_minimal.py"]
    print(f"{len(images)} images, model {model}")
    print(f"{'program':<22} {'max |Δp| vs predict':>20} {'max |Δlogit| vs Pillow':>23} {'labels equal':>13}")
    for name, rows in results.items():
        dp = max(abs(rows[p]["probabilities"][c] - reference[p][f"p_{c}"]) for p in images
                 for c in rows[p]["probabilities"])
        dz = max(abs(a - b) for p in images for a, b in zip(rows[p]["logits"], base[p]["logits"], strict=True))
        same = sum(rows[p]["label"] == reference[p]["prediction"] for p in images)
        print(f"{name:<22} {dp:>20.2e} {dz:>23.2e} {same:>9}/{len(images)}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python examples/compare.py MODEL.onnx IMAGE [IMAGE ...]")
    main(sys.argv[1], sys.argv[2:])
