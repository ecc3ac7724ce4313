"""How far INT8 moves a model's scores, for several quantization variants side by side.

    python -m benchmarks.int8_variants --onnx exports/model.onnx --data ../shared/data/isic-bm
    python -m benchmarks.int8_variants ... --variants conv,conv+add,conv:nobc,conv:keep=layer4

Each variant is quantized with ``skinonnx.export.quantize`` (calibration on the training split, as the
``quantize`` command does) and compared with the fp32 file on the validation split:

* ``rel_error``: std of the INT8 - fp32 logit margin (positive minus other logit) divided by the std
  of the fp32 margin: the random part of the error, in units of the model's own score spread;
* ``shift``: the mean of that difference, same unit: the systematic part (what bias correction removes);
* ``agreement`` and ``auc_change``: the gate's figures, at the model's threshold.

Variant syntax: ``OPS[:OPTION...]``; OPS is ``conv`` (the default) or ``conv+add`` (Conv, Add and
MaxPool, the first version); options ``nobc`` (no bias correction), ``norr`` (8-bit weights),
``keep=STAGE`` (repeatable), ``method=minmax|percentile|entropy``. No gate is enforced; nothing is kept.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

from skinonnx.data.layouts import discover
from skinonnx.deploy.runtime import OnnxClassifier, iter_preprocessed
from skinonnx.evaluation.metrics import roc_auc
from skinonnx.export import quantize

OP_SETS = {"conv": ("Conv",), "conv+add": ("Conv", "Add", "MaxPool")}


def parse_variant(text: str) -> tuple[tuple[str, ...], quantize.QuantizeSettings]:
    ops, *options = text.split(":")
    if ops not in OP_SETS:
        raise SystemExit(f"unknown op set '{ops}' in variant '{text}' (choose {', '.join(OP_SETS)})")
    kwargs: dict[str, Any] = {"min_agreement": 0.0, "max_auc_change": 1.0, "keep_fp32": ()}
    for option in options:
        if option == "nobc":
            kwargs["bias_correction"] = False
        elif option == "norr":
            kwargs["reduce_range"] = False
        elif option.startswith("keep="):
            kwargs["keep_fp32"] = (*kwargs["keep_fp32"], option[5:])
        elif option.startswith("method="):
            kwargs["method"] = option[7:]
        else:
            raise SystemExit(f"unknown option '{option}' in variant '{text}'")
    return OP_SETS[ops], quantize.QuantizeSettings(**kwargs)


def margins(model: Path, batches: list[np.ndarray], input_name: str, positive: int) -> np.ndarray:
    logits = quantize.model_logits(model, batches, input_name)
    return logits[:, positive] - logits[:, 1 - positive]


def interleaved_speed(models: list[Path], size: int, rounds: int, batch: int = 8) -> list[float]:
    """Images/s of each model on the same random batch, one call per model per round (noise hits all alike)."""
    sessions = [OnnxClassifier(m, "cpu") for m in models]
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    for s in sessions:
        s.predict_arrays(x)
        s.predict_arrays(x)
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(rounds):
        for s, t in zip(sessions, times, strict=True):
            t0 = time.perf_counter()
            s.predict_arrays(x)
            t.append(time.perf_counter() - t0)
    return [batch / float(np.median(t)) for t in times]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--onnx", type=Path, required=True, help="fp32 skinonnx model")
    p.add_argument("--data", required=True, help="the data it was trained on (train: calibration, val: comparison)")
    p.add_argument("--variants", default="conv+add,conv:nobc,conv,conv:keep=layer4")
    p.add_argument("--speed-rounds", type=int, default=7, help="timed rounds per variant (0: accuracy only)")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = p.parse_args(argv)

    fp32 = OnnxClassifier(args.onnx, "cpu")
    contract = fp32.contract
    found = discover(args.data, positive_class=contract.positive_class, write_split_file=False)
    val = found.split("val")
    y = np.array([int(s.label == found.classes.index(contract.positive_class)) for s in val])
    batches = [np.stack([a for _, a, _ in chunk if a is not None])
               for chunk in iter_preprocessed([s.path for s in val], fp32.preprocessing, batch_size=8)]
    pos = contract.positive_index
    m32 = margins(args.onnx, batches, fp32.input_name, pos)
    p32 = np.concatenate([fp32.predict_arrays(b)[:, pos] for b in batches])
    threshold = contract.threshold
    print(f"{args.onnx.name}: {len(y)} val images, fp32 ROC-AUC {roc_auc(y, p32):.4f}, margin std {m32.std():.3f}, "
          f"threshold {threshold:.4f}")
    print(f"{'variant':28s} {'rel_error':>9s} {'shift':>7s} {'agreement':>9s} {'AUC':>7s} {'seconds':>7s}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="skinonnx-int8v-") as tmp:
        for text in args.variants.split(","):
            ops, settings = parse_variant(text)
            out = Path(tmp) / f"variant{len(rows)}.onnx"
            t0 = time.perf_counter()
            with mock.patch.object(quantize, "QUANTIZED_OP_TYPES", ops):
                quantize.quantize_model(args.onnx, out, args.data, settings, echo=lambda _m: None)
            int8 = OnnxClassifier(out, "cpu", contract=contract)
            m8 = margins(out, batches, fp32.input_name, pos)
            p8 = np.concatenate([int8.predict_arrays(b)[:, pos] for b in batches])
            row = {"variant": text, "rel_error": float(np.std(m8 - m32) / m32.std()),
                   "shift": float(np.mean(m8 - m32) / m32.std()),
                   "agreement": float(np.mean((p32 >= threshold) == (p8 >= threshold))),
                   "auc_int8": roc_auc(y, p8), "seconds": time.perf_counter() - t0}
            rows.append(row)
            print(f"{text:28s} {row['rel_error']:9.1%} {row['shift']:+7.3f} {row['agreement']:9.1%} "
                  f"{row['auc_int8']:7.4f} {row['seconds']:7.0f}", flush=True)
            del int8
        if args.speed_rounds:
            speeds = interleaved_speed([args.onnx] + [Path(tmp) / f"variant{i}.onnx" for i in range(len(rows))],
                                       fp32.preprocessing.image_size, args.speed_rounds)
            for row, v in zip(rows, speeds[1:], strict=True):
                row["images_per_s"], row["x_fp32"] = v, v / speeds[0]
            print(f"speed, batch 8, {fp32.preprocessing.image_size}², medians of {args.speed_rounds} interleaved "
                  f"rounds: fp32 {speeds[0]:.1f} images/s; "
                  + ", ".join(f"{r['variant']} {r['images_per_s']:.1f} ({r['x_fp32']:.2f}×)" for r in rows))
    if args.out:
        args.out.write_text(json.dumps({"model": str(args.onnx), "auc_fp32": roc_auc(y, p32), "rows": rows},
                                       indent=2))


if __name__ == "__main__":
    main()
