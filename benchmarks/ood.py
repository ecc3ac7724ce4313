"""The ``ood_score`` on real out-of-distribution images, and what it costs per image.

    python -m benchmarks.ood --checkpoint runs/<name>/weights/best.pt [--data DIR] [--accept 0.95]

1. **Separation.** Pooled features (ResNet50 ``avgpool``) of the model's training, validation and test
   splits and of the far-OOD set (:mod:`skinonnx.data.far_ood`: scikit-image's bundled photographs plus
   generated noise, flat colours, checkerboards, stripes and text pages). Each method is fitted on the
   training split, its threshold on validation (``--accept``); reported: AUROC of ISIC test vs far-OOD
   (all, photos only, generated only), the share of ISIC test images refused and of far-OOD images accepted.
   Methods: Mahalanobis with a shared covariance estimated by Ledoit-Wolf, OAS or a PCA projection
   (K = 16, 64, 256), Euclidean distance to the nearest class mean (no covariance), the energy score
   on the logits (Liu et al. 2020) and the k-th nearest-neighbour distance of normalised features (k = 10,
   Sun et al. 2022).
2. **Cost.** The exported graph with and without the ``ood_score`` output (same model, same session
   settings; the head with a full Ledoit-Wolf whitening and with a PCA-64 projection), ONNX Runtime CPU,
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


def evaluate(scores: dict[str, np.ndarray], kinds: np.ndarray, accept: float) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    from skinonnx.export.ood import fit_threshold

    threshold = fit_threshold(scores["val"], accept)
    test, ood = scores["test"], scores["ood"]

    def auroc(mask: np.ndarray) -> float:
        y = np.r_[np.zeros(len(test)), np.ones(int(mask.sum()))]
        return float(roc_auc_score(y, np.r_[test, ood[mask]]))

    everything = np.ones(len(ood), bool)
    return {"auroc": auroc(everything), "auroc_photos": auroc(kinds == "photo"),
            "auroc_generated": auroc(kinds == "generated"), "threshold": threshold,
            "val_accepted": float(np.mean(scores["val"] <= threshold)),
            "test_refused": float(np.mean(test > threshold)), "ood_accepted": float(np.mean(ood <= threshold)),
            "ood_accepted_names": int(np.sum(ood <= threshold))}


def separation(model, prep, splits: dict[str, list], ood_paths: list[Path], accept: float) -> tuple[dict, dict]:
    from skinonnx.export.ood import fit_gaussians, pooled_features, preprocessed_batches

    feats, logits, labels = {}, {}, {}
    for name, items in {**splits, "ood": [(p, -1) for p in ood_paths]}.items():
        label = {str(p): y for p, y in items}
        kept, f, z = [], [], []
        for names, batch in preprocessed_batches([str(p) for p, _ in items], prep):
            a, b = pooled_features(model, batch)
            kept += names
            f.append(a)
            z.append(b)
        feats[name], logits[name] = np.concatenate(f), np.concatenate(z)
        labels[name] = np.array([label[p] for p in kept])
        if name == "ood":
            ood_names = [Path(p).stem for p in kept]
    kinds = np.array([n.split("-", 1)[0] for n in ood_names])
    results: dict[str, dict[str, float]] = {}
    for cov in MAHALANOBIS:
        t0 = time.perf_counter()
        fit = fit_gaussians(feats["train"], labels["train"], cov)
        results[f"mahalanobis[{cov}]"] = {**evaluate({k: fit.score(v) for k, v in feats.items()}, kinds, accept),
                                          "shrinkage": fit.shrinkage, "fit_seconds": time.perf_counter() - t0}
    means = np.stack([feats["train"][labels["train"] == c].mean(0) for c in sorted(set(labels["train"]))])
    euclid = {k: ((v[:, None, :] - means[None]) ** 2).sum(-1).min(1) for k, v in feats.items()}
    results["euclidean to class mean"] = evaluate(euclid, kinds, accept)
    results["energy (logits)"] = evaluate({k: energy(v) for k, v in logits.items()}, kinds, accept)
    results["knn k=10 (cosine)"] = evaluate({k: knn_distance(feats["train"], v) for k, v in feats.items()},
                                            kinds, accept)
    counts = {k: len(v) for k, v in feats.items()} | {"ood_photos": int((kinds == "photo").sum()),
                                                      "ood_generated": int((kinds == "generated").sum())}
    return results, counts


def cost(model, state, checkpoint: Path, prep, paths: list[Path], repeats: int, n_images: int,
         threads: int, covariances: tuple[str, ...] = ("ledoit_wolf", "pca:64")) -> dict[str, float]:
    """ORT time per image with / without the ood_score output (one file per estimator: a full 2048 x 2048
    whitening or a 2048 x K projection), on the same preprocessed images, rounds interleaved."""
    from skinonnx.deploy.runtime import OnnxClassifier
    from skinonnx.export.onnx_export import DEFAULT_OPSET, ExportWrapper, contract_from_checkpoint, to_onnx
    from skinonnx.export.ood import MahalanobisHead, OodFit, OodScore, features_of, fit_gaussians, preprocessed_batches

    contract = contract_from_checkpoint(state, checkpoint, DEFAULT_OPSET)
    kept, feats = features_of(model, [str(p) for p in paths], prep)
    batch = np.concatenate([b for _, b in preprocessed_batches([str(p) for p in paths[:n_images]], prep)])
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"plain": Path(tmp) / "plain.onnx"}
        to_onnx(model, contract, files["plain"], DEFAULT_OPSET)
        for cov in covariances:
            fit = fit_gaussians(feats, [i % 2 for i in range(len(kept))], cov)  # labels do not change the cost
            ood = OodFit(OodScore([MahalanobisHead(fit)]), 1.0, {})
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
        ood_paths = write_far_ood_images(tmp)
        results, counts = separation(model, prep, splits, ood_paths, args.accept)
    timing = cost(model, state, args.checkpoint, prep, [p for p, _ in splits["train"]], args.repeats,
                  args.timing_images, args.threads)
    report = {"checkpoint": str(args.checkpoint), "image_size": prep.image_size, "accept": args.accept,
              "counts": counts, "methods": results, "cost": timing,
              "test_refused_sampling_sd": float(np.sqrt(args.accept * (1 - args.accept) / counts["test"]))}
    print(f"images: {counts}")
    print(f"{'method':<28} {'AUROC':>6} {'photos':>6} {'gener.':>6} {'ISIC test refused':>17} {'OOD accepted':>12}")
    for name, r in results.items():
        print(f"{name:<28} {r['auroc']:6.3f} {r['auroc_photos']:6.3f} {r['auroc_generated']:6.3f} "
              f"{r['test_refused']:17.1%} {r['ood_accepted']:12.1%}")
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
