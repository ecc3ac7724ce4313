"""Does report.html scale? File sizes, writing time and headless Chromium's time for 5,000 images.

    python -m benchmarks.report_html [--n 5000] [--small 50] [--images DIR]

Builds two reports from the same generated predictions (n images and a small one), with case images
made from real files (``--images``, default ../shared/data/isic-bm/test, else generated lesions; the
files are reused round-robin, each case image is still decoded, cropped, blended and encoded), and a
7 x 7 map per image. Prints, per report: rows, report.html size, report_files/ size, seconds to write
the case images and the page, and Chromium's times: the page's own ``performance.now()`` when its
script ran at the end of parsing (``data-render-ms``) and at the load event (``data-load-ms``), and
the wall time of ``chromium --dump-dom`` against an empty page's (browser start-up). Ratios within
one run are the figures to quote; nothing here is a test.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.chromium import dump_dom, find_chromium
from skinonnx.data.preprocessing import Preprocessing
from skinonnx.reporting.case_images import FILES_DIR, write_case_images
from skinonnx.reporting.html_report import HTML_NAME, cases_from_rows, render_html
from skinonnx.reporting.report import evaluate_predictions

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isic-bm" / "test"


def synthetic_summary(y: np.ndarray, p: np.ndarray, threshold: float, skipped: list[dict[str, str]],
                      bootstrap: int = 20) -> dict:
    """A summary.json-shaped dict for generated predictions (the keys report.html reads)."""
    at = evaluate_predictions(y, p, threshold, bootstrap=bootstrap)
    return {
        "skinonnx_version": "0", "created_at": "2026-01-01T00:00:00Z", "provider": "CPUExecutionProvider",
        "positive_class": "malignant", "threshold": threshold, "threshold_source": "model metadata (youden)",
        "metrics": at["metrics"], "ci": at["ci"], "bootstrap": {"confidence": 0.95} if bootstrap else None,
        "model": {"path": "exports/model.onnx", "sha256": "ab" * 32, "exported_at": None, "exported_by": None,
                  "source_checkpoint": None, "opset": "17", "temperature": 1.0},
        "data": {"root": "data", "source": None, "split": "test", "n_evaluated": len(y), "n_positive": int(y.sum()),
                 "n_skipped": len(skipped)},
        "training": {"config": None, "best_epoch": None}, "parity": None, "skipped": skipped,
        "files": ["summary.json"],
    }


def synthetic_rows(y: np.ndarray, p: np.ndarray, threshold: float, files: list[Path]) -> list[dict]:
    name = {1: "malignant", 0: "benign"}
    return [{"path": str(files[i % len(files)]), "label": name[int(label)], "probability": float(prob),
             "prediction": name[int(prob >= threshold)]} for i, (label, prob) in enumerate(zip(y, p, strict=True))]


def source_images(folder: Path | None, tmp: Path) -> list[Path]:
    if folder is not None and folder.is_dir():
        files = sorted(folder.rglob("*.jpg"))[:200]
        if files:
            return files
    from skinonnx.data.synthetic import generate_dataset

    generate_dataset(tmp / "gen", counts={"train": 0, "val": 0, "test": 40}, size=256, seed=0, progress=False)
    return sorted((tmp / "gen").rglob("*.png"))


def build(out: Path, n: int, files: list[Path], prep: Preprocessing, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(int)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    cams = list(rng.normal(0, 1, (n, 7, 7)).astype(np.float32))
    skipped = [{"path": f"broken_{i}.jpg", "problem": "corrupt or truncated image data"} for i in range(n // 500)]
    summary = synthetic_summary(y, p, 0.5, skipped)
    rows = synthetic_rows(y, p, 0.5, files)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    thumbs = write_case_images([r["path"] for r in rows], cams, prep, out / FILES_DIR)
    t1 = time.perf_counter()
    page = render_html(summary, cases_from_rows(rows, "malignant", 0.5, thumbs), has_cam=True)
    (out / HTML_NAME).write_text(page, encoding="utf-8")
    t2 = time.perf_counter()
    folder = sum(f.stat().st_size for f in (out / FILES_DIR).iterdir())
    return {"rows": n, "html_mb": len(page.encode()) / 1e6, "files_mb": folder / 1e6, "images_s": t1 - t0,
            "page_s": t2 - t1}


def browse(page: Path) -> dict[str, float]:
    run = dump_dom(page, timeout=300)
    found = dict(re.findall(r'data-(render-ms|load-ms|ready)="(\d+)"', run.stdout))
    errors = re.findall(r"<li>(.*?)</li>", (re.search(r'<ul id="js-errors"[^>]*>(.*?)</ul>', run.stdout, re.S)
                                           or re.search("()", "")).group(1))
    return {"render_ms": float(found.get("render-ms", "nan")), "load_ms": float(found.get("load-ms", "nan")),
            "wall_s": run.seconds, "ready": found.get("ready") == "1", "errors": len(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--small", type=int, default=50)
    parser.add_argument("--images", type=Path, default=REAL)
    args = parser.parse_args()
    prep = Preprocessing.for_size(224)
    with tempfile.TemporaryDirectory(prefix="skinonnx-report-bench-") as tmp_name:
        tmp = Path(tmp_name)
        files = source_images(args.images, tmp)
        empty = tmp / "empty.html"
        empty.write_text("<!doctype html><title>x</title><p>x</p>")
        results = {}
        for label, n in (("small", args.small), ("large", args.n)):
            results[label] = build(tmp / label, n, files, prep)
        if find_chromium() is not None:
            baseline = browse(empty)["wall_s"]
            for label in results:
                results[label].update(browse(tmp / label / HTML_NAME))
                results[label]["wall_minus_startup_s"] = results[label]["wall_s"] - baseline
            print(f"chromium start-up (empty page): {baseline:.2f} s")
        print(f"case images from {len(files)} source files ({files[0].parent})")
        for label, r in results.items():
            print(f"{label:>5}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in r.items()))
        s, big = results["small"], results["large"]
        print(f"large / small: html size x {big['html_mb'] / s['html_mb']:.1f}, rows x {big['rows'] / s['rows']:.0f}"
              + (f", parse time x {big['render_ms'] / max(s['render_ms'], 1):.1f}" if "render_ms" in big else ""))


if __name__ == "__main__":
    main()
