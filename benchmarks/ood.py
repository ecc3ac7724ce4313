"""The ``ood_score`` on real out-of-distribution images, and what it costs per image.

    python -m benchmarks.ood --checkpoint runs/<name>/weights/best.pt [--data DIR] [--accept 0.95]

1. **Separation.** Pooled features (ResNet50 ``avgpool``) and image statistics
   (:mod:`skinonnx.export.ood_statistics`) of the model's training, validation and test splits, of the
   far-OOD set (:mod:`skinonnx.data.far_ood`: scikit-image's bundled photographs plus generated noise, flat
   colours, checkerboards, stripes and text pages) and of the near-OOD set (:mod:`skinonnx.data.near_ood`:
   greyscale, blurred and colour-cast copies of ``--near-sources`` validation images, flat pink/skin images,
   pink blobs, skin and photo close-ups). Each method is fitted on the training split, its threshold on
   validation (``--accept``); reported: AUROC of ISIC test vs far-OOD (all, photos only, generated only) and
   vs near-OOD, the share of ISIC test images refused, of far-OOD and of near-OOD images refused (and per
   near-OOD kind). Methods: **the exported score** (Mahalanobis PCA-64 of the features and the 3-NN distance
   of the whitened image statistics, each scaled by its own validation quantile, their maximum), the image
   statistics alone (k = 1, 3, 10 nearest training images),
   Mahalanobis of the features alone with a shared covariance estimated by Ledoit-Wolf, OAS or a PCA
   projection (K = 16, 64 (the score before the image statistics), 256), Euclidean distance to the nearest
   class mean (no covariance), the energy score on the logits (Liu et al. 2020) and the k-th
   nearest-neighbour distance of normalised features (k = 10, Sun et al. 2022).
2. **Cost.** The exported graph with and without the ``ood_score`` output (same model, same session
   settings; the head with a full Ledoit-Wolf whitening and with a PCA-64 projection, both with the image
   statistics as exported), ONNX Runtime CPU,
   batch 1 and 8, single calls alternating between the files, the 10th percentile of each (robust on a
   shared machine); the ratio with/without is what counts. Also the multiply-adds of the head vs ResNet50.

Writes JSON to ``--out`` (default /tmp/skinonnx-bench/ood-<time>.json) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SKINONNX_ISIC_DATA") or ROOT.parent / "shared" / "data" / "isic-bm")
RESNET50_MACS_224 = 4.09e9  # multiply-adds of ResNet50 at 224 x 224 (scales with the pixel count)
MAHALANOBIS = ("ledoit_wolf", "oas", "pca:16", "pca:64", "pca:256")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ood", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, default=REAL_DATA, help="Split ImageFolder the model was trained on.")
    p.add_argument("--accept", type=float, default=0.95)
    p.add_argument("--near-sources", type=int, default=30,
                   help="Validation images whose greyscale, blurred and colour-cast copies enter the near-OOD set.")
    p.add_argument("--repeats", type=int, default=5,
                   help="Timing: 10 x this many single calls per model, alternating; the 10th percentile counts.")
    p.add_argument("--timing-images", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def energy(logits: np.ndarray) -> np.ndarray:
    """Negative free energy, sign flipped so that higher = more unlike: ``-logsumexp(logits)``."""
    m = logits.max(1, keepdims=True)
    return -(m[:, 0] + np.log(np.exp(logits - m).sum(1)))


def knn_distance(train: np.ndarray, x: np.ndarray, k: int = 10) -> np.ndarray:
    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    d = 1.0 - unit(x) @ unit(train).T
    return np.sort(d, axis=1)[:, min(k, train.shape[0]) - 1]


def evaluate(scores: dict[str, np.ndarray], kinds: np.ndarray, near_kinds: np.ndarray, accept: float,
             threshold: float | None = None) -> dict:
    from sklearn.metrics import roc_auc_score

    from skinonnx.export.ood import fit_threshold

    threshold = fit_threshold(scores["val"], accept) if threshold is None else threshold
    test, ood, near = scores["test"], scores["ood"], scores["near"]

    def auroc(other: np.ndarray) -> float:
        y = np.r_[np.zeros(len(test)), np.ones(len(other))]
        return float(roc_auc_score(y, np.r_[test, other]))

    return {"auroc": auroc(ood), "auroc_photos": auroc(ood[kinds == "photo"]),
            "auroc_generated": auroc(ood[kinds == "generated"]), "auroc_near": auroc(near), "threshold": threshold,
            "val_accepted": float(np.mean(scores["val"] <= threshold)),
            "test_refused": float(np.mean(test > threshold)), "ood_accepted": float(np.mean(ood <= threshold)),
            "ood_refused": float(np.mean(ood > threshold)), "ood_accepted_names": int(np.sum(ood <= threshold)),
            "near_refused": float(np.mean(near > threshold)),
            "near_refused_by_kind": {k: float(np.mean(near[near_kinds == k] > threshold))
                                     for k in sorted(set(near_kinds.tolist()))}}


def combined(feature: dict[str, np.ndarray], statistics: dict[str, np.ndarray], accept: float
             ) -> tuple[dict[str, np.ndarray], float, list[float]]:
    """The exported score: each part scaled by its own validation quantile, then their maximum
    (:func:`skinonnx.export.ood.fit_parts`); the scores, the threshold and the scales."""
    import torch

    from skinonnx.export.ood import OodScore, fit_parts

    holder = OodScore([], 1)
    threshold, _ = fit_parts(holder, np.stack([feature["val"], statistics["val"]], 1), accept)
    inverse = holder.inverse_scales.numpy()
    with torch.no_grad():
        scores = {k: (np.stack([feature[k], statistics[k]], 1).astype(np.float32) * inverse).max(1).astype(np.float64)
                  for k in feature}
    return scores, threshold, [1 / float(v) for v in inverse]


def separation(model, prep, splits: dict[str, list], ood_paths: list[Path], near_paths: list[Path],
               accept: float) -> tuple[dict, dict, dict]:
    from skinonnx.export.ood import fit_gaussians, pooled_features, preprocessed_batches
    from skinonnx.export.ood_statistics import batch_statistics, fit_statistics

    feats, logits, labels, stats, names = {}, {}, {}, {}, {}
    for name, items in {**splits, "ood": [(p, -1) for p in ood_paths], "near": [(p, -1) for p in near_paths]}.items():
        label = {str(p): y for p, y in items}
        kept, f, z, s = [], [], [], []
        for batch_names, batch in preprocessed_batches([str(p) for p, _ in items], prep):
            a, b = pooled_features(model, batch)
            kept += batch_names
            f.append(a)
            z.append(b)
            s.append(batch_statistics(batch, prep))
        feats[name], logits[name], stats[name] = np.concatenate(f), np.concatenate(z), np.concatenate(s)
        labels[name] = np.array([label[p] for p in kept])
        names[name] = [Path(p).stem for p in kept]
    kinds = np.array([n.split("-", 1)[0] for n in names["ood"]])
    near_kinds = np.array([n.split("-", 1)[0] for n in names["near"]])
    results: dict[str, dict] = {}
    statistics_fit = fit_statistics(stats["train"])
    statistics = {k: statistics_fit.score(v) for k, v in stats.items()}
    feature = {}
    for cov in MAHALANOBIS:
        t0 = time.perf_counter()
        fit = fit_gaussians(feats["train"], labels["train"], cov)
        feature[cov] = {k: fit.score(v) for k, v in feats.items()}
        results[f"mahalanobis[{cov}]"] = {**evaluate(feature[cov], kinds, near_kinds, accept),
                                          "shrinkage": fit.shrinkage, "fit_seconds": time.perf_counter() - t0}
    scores, threshold, scales = combined(feature["pca:64"], statistics, accept)
    alone = {}
    for k in (1, 3, 10):
        statistics_fit.neighbours = k
        alone[f"image statistics alone, k={k}"] = evaluate({n: statistics_fit.score(v) for n, v in stats.items()},
                                                           kinds, near_kinds, accept)
    results = {"exported: max(pca:64, statistics)": {**evaluate(scores, kinds, near_kinds, accept, threshold),
                                                     "part_scales": scales,
                                                     "statistics_shrinkage": statistics_fit.shrinkage},
               **alone, **results}
    means = np.stack([feats["train"][labels["train"] == c].mean(0) for c in sorted(set(labels["train"]))])
    euclid = {k: ((v[:, None, :] - means[None]) ** 2).sum(-1).min(1) for k, v in feats.items()}
    results["euclidean to class mean"] = evaluate(euclid, kinds, near_kinds, accept)
    results["energy (logits)"] = evaluate({k: energy(v) for k, v in logits.items()}, kinds, near_kinds, accept)
    results["knn k=10 (cosine)"] = evaluate({k: knn_distance(feats["train"], v) for k, v in feats.items()},
                                            kinds, near_kinds, accept)
    exported = scores
    refused = {k: [n for n, v in zip(names[k], exported[k], strict=True) if v > threshold] for k in ("test",)}
    accepted = {k: [n for n, v in zip(names[k], exported[k], strict=True) if v <= threshold] for k in ("ood", "near")}
    counts = {k: len(v) for k, v in feats.items()} | {"ood_photos": int((kinds == "photo").sum()),
                                                      "ood_generated": int((kinds == "generated").sum())} | {
        f"near_{k}": int((near_kinds == k).sum()) for k in sorted(set(near_kinds.tolist()))}
    return results, counts, {"test_refused": refused["test"], "far_accepted": accepted["ood"],
                             "near_accepted": accepted["near"]}


def cost(model, state, checkpoint: Path, prep, paths: list[Path], repeats: int, n_images: int,
         threads: int, covariances: tuple[str, ...] = ("ledoit_wolf", "pca:64")) -> dict[str, float]:
    """ORT time per image with / without the ood_score output (one file per estimator: a full 2048 x 2048
    whitening or a 2048 x K projection), on the same preprocessed images, rounds interleaved."""
    from skinonnx.deploy.runtime import OnnxClassifier
    from skinonnx.export.onnx_export import DEFAULT_OPSET, ExportWrapper, contract_from_checkpoint, to_onnx
    from skinonnx.export.ood import (
        MahalanobisHead,
        OodFit,
        OodScore,
        features_of,
        fit_gaussians,
        preprocessed_batches,
        statistics_of,
    )
    from skinonnx.export.ood_statistics import StatisticsHead, fit_statistics

    contract = contract_from_checkpoint(state, checkpoint, DEFAULT_OPSET)
    kept, feats = features_of(model, [str(p) for p in paths], prep)
    statistics = StatisticsHead(prep, fit_statistics(statistics_of([str(p) for p in paths], prep)[1]))
    batch = np.concatenate([b for _, b in preprocessed_batches([str(p) for p in paths[:n_images]], prep)])
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"plain": Path(tmp) / "plain.onnx"}
        to_onnx(model, contract, files["plain"], DEFAULT_OPSET)
        for cov in covariances:
            fit = fit_gaussians(feats, [i % 2 for i in range(len(kept))], cov)  # labels do not change the cost
            ood = OodFit(OodScore([MahalanobisHead(fit)], 1, statistics), 1.0, {})
            base = ExportWrapper(model, contract.temperature)
            hooks = ood.attach(base, [model])
            files[cov] = Path(tmp) / f"{cov.replace(':', '')}.onnx"
            to_onnx(None, ood.contract(contract), files[cov], DEFAULT_OPSET, wrapper=base)
            hooks.remove()
            out[f"file_mb_{cov}"] = files[cov].stat().st_size / 1e6
            out[f"head_macs_{cov}"] = float(fit.whitening.size)  # [N, D] x [D, k]; the rest is O(C k)
            out[f"head_macs_share_{cov}"] = fit.whitening.size / (RESNET50_MACS_224 * (prep.image_size / 224) ** 2)
        out["file_mb_plain"] = files["plain"].stat().st_size / 1e6
        sessions = {k: OnnxClassifier(f, "cpu", threads=threads) for k, f in files.items()}
        names = {k: ["probabilities"] if k == "plain" else ["probabilities", "ood_score"] for k in files}
        for size in (1, 8):
            x = batch[:size]
            times: dict[str, list[float]] = {k: [] for k in sessions}
            for _ in range(repeats * 10):  # single calls, models alternating: contention hits all alike
                for key, clf in sessions.items():
                    t0 = time.perf_counter()
                    clf.session.run(names[key], {clf.input_name: x})
                    times[key].append(time.perf_counter() - t0)
            fastest = {k: float(np.percentile(v, 10)) for k, v in times.items()}  # robust to a busy machine
            out[f"batch{size}_ms_per_image_plain"] = 1000 * fastest["plain"] / size
            for cov in covariances:
                out[f"batch{size}_ms_per_image_{cov}"] = 1000 * fastest[cov] / size
                out[f"batch{size}_ratio_{cov}"] = fastest[cov] / fastest["plain"]
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from skinonnx.data.far_ood import write_far_ood_images
    from skinonnx.data.layouts import discover
    from skinonnx.data.near_ood import write_near_ood_images
    from skinonnx.data.preprocessing import Preprocessing
    from skinonnx.training.checkpoint import load_checkpoint, model_from_checkpoint

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    state = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(state).eval()
    prep = Preprocessing.from_dict(state["preprocessing"])
    found = discover(args.data, write_split_file=False)
    splits = {name: [(s.path, s.label) for s in found.split(name)] for name in ("train", "val", "test")}
    with tempfile.TemporaryDirectory() as tmp:
        ood_paths = write_far_ood_images(Path(tmp) / "far")
        near_paths = write_near_ood_images(Path(tmp) / "near", [p for p, _ in splits["val"][:args.near_sources]])
        results, counts, listing = separation(model, prep, splits, ood_paths, near_paths, args.accept)
    timing = cost(model, state, args.checkpoint, prep, [p for p, _ in splits["train"]], args.repeats,
                  args.timing_images, args.threads)
    report = {"checkpoint": str(args.checkpoint), "image_size": prep.image_size, "accept": args.accept,
              "counts": counts, "methods": results, "exported_listing": listing, "cost": timing,
              "test_refused_sampling_sd": float(np.sqrt(args.accept * (1 - args.accept) / counts["test"]))}
    print(f"images: {counts}")
    print(f"{'method':<36} {'AUROC':>6} {'photos':>6} {'gener.':>6} {'near':>6} {'ISIC test refused':>17} "
          f"{'far refused':>11} {'near refused':>12}")
    for name, r in results.items():
        print(f"{name:<36} {r['auroc']:6.3f} {r['auroc_photos']:6.3f} {r['auroc_generated']:6.3f} "
              f"{r['auroc_near']:6.3f} {r['test_refused']:17.1%} {r['ood_refused']:11.1%} "
              f"{r['near_refused']:12.1%}")
    for name in [*list(results)[:2], "mahalanobis[pca:64]"]:
        print(f"near-OOD refused by kind, {name}: " + ", ".join(
            f"{k} {v:.0%}" for k, v in results[name]["near_refused_by_kind"].items()))
    print(f"exported score: ISIC test refused {listing['test_refused']}; far-OOD accepted {listing['far_accepted']}; "
          f"near-OOD accepted {listing['near_accepted']}")
    for cov in ("ledoit_wolf", "pca:64"):
        print(f"cost of ood_score [{cov}] (ORT CPU, {args.threads} thread(s), same run): " + ", ".join(
            f"batch {b}: {timing[f'batch{b}_ms_per_image_plain']:.2f} -> {timing[f'batch{b}_ms_per_image_{cov}']:.2f} "
            f"ms/image (x{timing[f'batch{b}_ratio_{cov}']:.3f})" for b in (1, 8))
            + f"; file {timing['file_mb_plain']:.1f} -> {timing[f'file_mb_{cov}']:.1f} MB; head multiply-adds "
            f"{timing[f'head_macs_share_{cov}']:.2%} of ResNet50's")
    out = args.out or Path("/tmp/skinonnx-bench") / f"ood-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"written: {out}")
    return report


if __name__ == "__main__":
    main()
