"""The data audit, measured: hash threshold, leakage recall/precision, quality checks, label errors, time at 10k.

    python -m benchmarks.audit threshold   # planted copies of isic-bm images vs every pair of distinct ones
    python -m benchmarks.audit leakage     # `audit` on a planted copy of isic-bm: recall and precision
    python -m benchmarks.audit quality     # CleanVision's Imagelab vs ours on isic-bm (time, flags, blurred copies)
    python -m benchmarks.audit labels      # `train --folds 5` (random init, 32 px) on a 5 %-flipped copy, then rank
    python -m benchmarks.audit scale       # audit of 10,000 generated images, then its cached rerun
    python -m benchmarks.audit all

Everything runs in a temporary folder (the image cache too); isic-bm is read, never written. Results print as
JSON lines; docs/audit.md quotes them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("SKINONNX_ISIC_DATA") or ROOT.parent / "shared" / "data" / "isic-bm")


def emit(name: str, **values: object) -> None:
    print(json.dumps({"measure": name, **values}), flush=True)


def threshold(per_alteration: int = 40) -> None:
    import imagehash
    from PIL import Image

    from skinonnx.audit.planted import ALTERATIONS
    from skinonnx.data.duplicates import NEAR_DISTANCE, _distances, perceptual_hashes
    from skinonnx.data.images import load_rgb

    files = sorted(REAL_DATA.glob("*/*/*.jpg"))
    t0 = time.perf_counter()
    hashes = np.stack([perceptual_hashes(load_rgb(f, draft_size=256)) for f in files])
    emit("hash_time", images=len(files), ms_per_image=round((time.perf_counter() - t0) / len(files) * 1e3, 2))
    stored = hashes[:, 0, :]
    dist = np.minimum(*(lambda d: (d, d.T))(np.concatenate([_distances(hashes[i:i + 8], stored)
                                                             for i in range(0, len(files), 8)])))
    negatives = dist[np.triu_indices(len(files), 1)]
    emit("distinct_pairs_256bit", pairs=len(negatives), min=int(negatives.min()),
         at_or_below_threshold=int((negatives <= NEAR_DISTANCE).sum()),
         quantiles={q: float(np.quantile(negatives, q)) for q in (1e-4, 1e-3, 1e-2)})
    # the rejected alternative: 64-bit phash over the same 8 orientations
    def phash64(image: Image.Image) -> list[int]:
        return [int(str(imagehash.phash(image if t is None else image.transpose(t), 8)), 16)
                for t in (None, *Image.Transpose)]  # the identity and the 7 other right-angle orientations

    small = np.array([phash64(load_rgb(f)) for f in files], np.uint64)
    d64 = np.min([np.bitwise_count(small[:, k, None] ^ small[None, :, 0]) for k in range(8)], axis=0)
    neg64 = np.minimum(d64, d64.T)[np.triu_indices(len(files), 1)]
    emit("distinct_pairs_64bit_phash", min=int(neg64.min()), at_or_below={t: int((neg64 <= t).sum()) for t in
                                                                            (4, 8, 12)})
    rng = np.random.default_rng(0)
    for how, fn in ALTERATIONS.items():
        ds = []
        for i in rng.choice(len(files), per_alteration, replace=False):
            raw, _ = fn(files[i].read_bytes(), load_rgb(files[i]))
            q = perceptual_hashes(Image.open(io.BytesIO(raw)).convert("RGB"))
            ds.append(int(min(_distances(q[None], stored[i:i + 1])[0, 0],
                              _distances(hashes[i:i + 1], q[None, 0])[0, 0])))
        emit("planted_copy_distance", alteration=how, n=len(ds), max=max(ds), median=float(np.median(ds)),
             recall=float(np.mean(np.array(ds) <= NEAR_DISTANCE)))
    from skinonnx.audit.planted import _crop, _jpeg

    for fraction in (0.01, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15):  # how slight must a crop be
        ds = []
        for i in rng.choice(len(files), 20, replace=False):
            q = perceptual_hashes(Image.open(io.BytesIO(_jpeg(_crop(load_rgb(files[i]), fraction)))).convert("RGB"))
            ds.append(int(min(_distances(q[None], stored[i:i + 1])[0, 0],
                              _distances(hashes[i:i + 1], q[None, 0])[0, 0])))
        emit("crop_sweep", crop_per_side=fraction, n=len(ds), max=max(ds), recall=float(np.mean(np.array(ds)
                                                                                              <= NEAR_DISTANCE)))


def leakage_measure(work: Path) -> None:
    from skinonnx.audit.planted import plant
    from skinonnx.audit.run import run_audit
    from skinonnx.data.image_cache import ImageCache

    planted = plant(REAL_DATA, work / "planted", copies_per_alteration=5, flip_fraction=0.05, seed=0)
    doc = run_audit(planted.root, work / "report", cache=ImageCache(work / "cache.json"), progress=False,
                    echo=lambda _: None)
    truth = {(s.relative_to(planted.root).as_posix(), c.relative_to(planted.root).as_posix()): how
             for c, s, how in planted.copies}
    found = {(p["a"]["path"], p["b"]["path"]) for p in doc["pairs"] if p["leakage"]}
    hit = found & set(truth)
    missed = sorted(truth[k] + ": " + k[1] for k in set(truth) - found)
    emit("leakage_planted_isic", planted=len(truth), found=len(found), true_positives=len(hit),
         recall=len(hit) / len(truth), precision=len(hit) / max(1, len(found)), missed=missed,
         extra_pairs=sorted(found - set(truth)), seconds=doc["seconds"])


def quality_measure(work: Path) -> None:
    from PIL import ImageFilter

    from skinonnx.audit.quality import find_quality_issues, measure
    from skinonnx.data.images import load_rgb

    files = sorted(REAL_DATA.glob("*/*/*.jpg"))
    from cleanvision import Imagelab

    t0 = time.perf_counter()
    lab = Imagelab(filepaths=[str(f) for f in files])
    lab.find_issues(n_jobs=1, verbose=False)
    cv_seconds = time.perf_counter() - t0
    cv_flags = {c[3:-6]: sorted(Path(p).name for p in lab.issues.index[lab.issues[c]])
                for c in lab.issues.columns if c.startswith("is_") and lab.issues[c].any()}
    t0 = time.perf_counter()
    records = [measure(load_rgb(f)) for f in files]
    ours = find_quality_issues(records)
    our_seconds = time.perf_counter() - t0
    our_flags: dict[str, list[str]] = {}
    for f, found in zip(files, ours, strict=True):
        for issue in found:
            our_flags.setdefault(issue, []).append(f.name)
    emit("quality_isic", cleanvision_seconds=round(cv_seconds, 2), cleanvision=cv_flags,
         ours_seconds=round(our_seconds, 2), ours=our_flags)
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(files), 40, replace=False)
    for radius in (1.0, 1.5, 3.0, 5.0):
        blurred = [load_rgb(files[i]).filter(ImageFilter.GaussianBlur(radius)) for i in chosen]
        folder = work / f"blur{radius}"
        folder.mkdir()
        paths = []
        for k, im in enumerate(blurred):
            paths.append(folder / f"{k}.png")
            im.save(paths[-1])
        lab = Imagelab(filepaths=[str(f) for f in files] + [str(p) for p in paths])  # originals + blurred copies
        lab.find_issues({"blurry": {}}, n_jobs=1, verbose=False)
        cv_hits = int(lab.issues["is_blurry_issue"].to_numpy()[len(files):].sum())
        found = find_quality_issues(records + [measure(im) for im in blurred])
        emit("blurred_copies_flagged", radius_px=radius, n=len(blurred), cleanvision=cv_hits,
             ours=sum("blurry" in f for f in found[len(files):]),
             ours_originals_flagged=sum("blurry" in f for f in found[:len(files)]))


def labels_measure(work: Path, epochs: int, image_size: int) -> None:
    from skinonnx.audit.label_issues import rank_label_issues, read_out_of_fold
    from skinonnx.audit.planted import plant

    planted = plant(REAL_DATA, work / "flipped", copies_per_alteration=0, flip_fraction=0.05, seed=1)
    t0 = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", "--data", str(planted.root), "--folds", "5", "--weights",
           "none", "--image-size", str(image_size), "--epochs", str(epochs), "--batch-size", "32", "--name", "cv",
           "--runs-dir", str(work / "runs"), "--quiet", "--lr", "1e-3", "--threads", "1", "--workers", "0",
           "--compile", "off"]  # a shared 2-core machine: no thread or worker oversubscription
    subprocess.run(cmd, check=True, cwd=work, stdout=subprocess.DEVNULL)
    train_seconds = time.perf_counter() - t0
    oof = read_out_of_fold(work / "runs" / "cv")
    ranked = rank_label_issues(oof.labels, oof.probabilities)
    flipped = {p.relative_to(planted.root).as_posix() for p in planted.flipped}
    order = [oof.paths[r.index] for r in ranked]
    k = len(flipped)
    flagged = [oof.paths[r.index] for r in ranked if r.flagged]
    from sklearn.metrics import roc_auc_score

    is_flipped = np.array([p in flipped for p in oof.paths])
    auc = roc_auc_score(is_flipped, -np.array([r.quality for r in sorted(ranked, key=lambda r: r.index)]))
    emit("label_errors_after_cv", images=len(order), flipped=k, epochs=epochs, image_size=image_size,
         train_seconds=round(train_seconds), oof_auc=json.loads((work / "runs" / "cv" / "cv.json").read_text())
         ["oof"]["roc_auc"], flipped_in_top_k=len(set(order[:k]) & flipped),
         flipped_in_top_2k=len(set(order[:2 * k]) & flipped), chance_top_k=round(k * k / len(order), 1),
         flagged=len(flagged), flagged_flipped=len(set(flagged) & flipped), ranking_auc=round(float(auc), 3))


def scale_measure(work: Path, n: int, size: int, keep: Path | None) -> None:
    from skinonnx.audit.run import run_audit
    from skinonnx.data.image_cache import ImageCache
    from skinonnx.data.synthetic import generate_dataset

    per_class = n // 2
    counts = {"train": int(per_class * 0.64), "val": int(per_class * 0.16)}
    counts["test"] = per_class - counts["train"] - counts["val"]
    t0 = time.perf_counter()
    folder = keep or work / "gen"
    if not (folder / "generator.json").is_file():  # --keep DIR: generated once, audited again in later runs
        generate_dataset(folder, counts=counts, size=size, seed=5, progress=False)
    generated = time.perf_counter() - t0
    cache = work / "cache.json"
    first = run_audit(folder, work / "r1", cache=ImageCache(cache), progress=False, echo=lambda _: None)
    second = run_audit(folder, work / "r2", cache=ImageCache(cache), progress=False, echo=lambda _: None)
    emit("audit_scale", images=first["summary"]["images"], size=size, generate_seconds=round(generated),
         first_seconds=first["seconds"], cached_seconds=second["seconds"],
         speedup=round(first["seconds"] / second["seconds"], 1), pairs=first["summary"]["duplicate_pairs"],
         cache_mb=round(cache.stat().st_size / 1e6, 1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.audit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["threshold", "leakage", "quality", "labels", "scale", "all"])
    p.add_argument("--images", type=int, default=10_000, help="scale: generated images")
    p.add_argument("--size", type=int, default=64, help="scale: generated image side (px)")
    p.add_argument("--keep", type=Path, default=None, help="scale: generate into (and reuse) this folder")
    p.add_argument("--epochs", type=int, default=2, help="labels: epochs per fold")
    p.add_argument("--image-size", type=int, default=32, help="labels: training crop size")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="skinonnx-audit-bench-") as tmp:
        os.environ["SKINONNX_CACHE_DIR"] = str(Path(tmp) / "cache")
        jobs = {"threshold": lambda w: threshold(), "leakage": leakage_measure, "quality": quality_measure,
                "labels": lambda w: labels_measure(w, args.epochs, args.image_size),
                "scale": lambda w: scale_measure(w, args.images, args.size, args.keep)}
        for name in (jobs if args.what == "all" else [args.what]):
            work = Path(tmp) / name
            work.mkdir()
            jobs[name](work)


if __name__ == "__main__":
    main()
