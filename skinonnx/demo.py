"""`demo`: the embedded default, offline: synthetic data -> train -> export (+parity) -> test -> predict.

The demo writes only its own files: ``data/synthetic/``, ``runs/demo/`` (``demo-2``... when taken),
``exports/demo.onnx`` and ``reports/demo/``; a user's ``exports/model.onnx`` is never touched."""

from __future__ import annotations

import time
from pathlib import Path

from .data.synthetic import generate_dataset

DEMO_COUNTS = {"train": 96, "val": 24, "test": 30}  # per class: the original's 64/16/20 % proportions
DEMO_ONNX = "demo.onnx"


def run_demo(data_dir: Path, *, epochs: int = 8, image_size: int = 64, seed: int = 0, progress: bool = True,
             echo=print, workdir: Path = Path(".")) -> dict[str, float]:
    from .deploy.predict import collect_inputs, run_predict, write_outputs
    from .deploy.runtime import OnnxClassifier
    from .export.onnx_export import export
    from .reporting.report import evaluate_split
    from .reporting.terminal import format_metrics
    from .training.loop import TrainConfig, fit

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    summary = generate_dataset(data_dir, counts=DEMO_COUNTS, size=max(96, image_size * 2), seed=seed,
                               progress=progress)
    timings["generate_s"] = time.perf_counter() - t0
    echo(f"[1/5] synthetic data set in {data_dir}: {summary['counts']}")

    t = time.perf_counter()
    cfg = TrainConfig(data=str(data_dir), name="demo", weights="none", epochs=epochs, batch_size=16, lr=5e-4,
                      image_size=image_size, seed=seed, early_stop=0, scheduler="cosine", progress=progress,
                      runs_dir=str(workdir / "runs"))
    result = fit(cfg, echo=echo)  # its own run folder: runs/demo/ (demo-2, ... if taken), never another run's
    timings["train_s"] = time.perf_counter() - t
    echo(f"[2/5] trained {result.run_dir}: best val AUC {result.best_metric:.3f} at epoch {result.best_epoch}")

    t = time.perf_counter()
    onnx_path = workdir / "exports" / DEMO_ONNX  # its own file: never a user's exports/model.onnx
    exported = export(result.best_path, onnx_path, data=str(data_dir), echo=echo)
    timings["export_s"] = time.perf_counter() - t
    echo(f"[3/5] exported {onnx_path} (parity max |Δp| {exported.parity.max_prob_diff:.2e})")

    t = time.perf_counter()
    classifier = OnnxClassifier(onnx_path, "auto")
    evaluated = evaluate_split(classifier, data_dir, out_dir=workdir / "reports" / "demo", progress=progress)
    timings["test_s"] = time.perf_counter() - t
    echo("[4/5] test split through ONNX Runtime:\n" + format_metrics(evaluated))

    t = time.perf_counter()
    paths, _ = collect_inputs([str(data_dir / "test")])
    predicted = run_predict(classifier, paths, progress=progress)
    write_outputs(predicted, workdir / "reports" / "demo" / "predict.csv", provider=classifier.provider,
                  model=onnx_path)
    timings["predict_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    echo(f"[5/5] predicted {len(predicted.rows)} images -> {workdir / 'reports' / 'demo' / 'predict.csv'}")
    echo("demo finished in {total_s:.0f} s (train {train_s:.0f} s, export {export_s:.0f} s)".format(**timings)
         + f"; its model is {onnx_path} (try `python cli.py info {onnx_path}`)")
    return timings
