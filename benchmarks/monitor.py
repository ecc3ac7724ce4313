"""`monitor`'s drift test: false-alarm rate on same-distribution batches, detection rate on three shifts.

The pool is every image of the data's val and test splits (never trained on; the real ISIC images by
default). Each repeat draws a batch of ``--batch`` images at random; the rest of the pool is the reference
(what `test` would have recorded), so a same-distribution batch is exchangeable with its reference, exactly
the null hypothesis. A shifted batch is the same draw transformed:

* ``colour cast``: red x 1.12, blue x 0.88 (a warmer white balance; a new dermatoscope or lamp);
  ``mild colour cast``: x 1.04 / x 0.96;
* ``blur``: Gaussian blur, radius 1.5 px on the 256 px images (out of focus); ``mild blur``: radius 0.6 px;
* ``other source``: random crops of scikit-image's bundled photographs (skimage.data: astronaut, coffee,
  chelsea, rocket, ...), not skin at all.

Quantities compared: the model's probability and the image statistics (data/image_statistics.py), as
`monitor` does; ``ood_score`` too when the model has one. Both tests (KS + Holm, MMD permutation) run on the
same draws.

    python -m benchmarks.monitor --onnx exports/model.onnx [--data /path/to/isic-bm] [--repeats 20] [--batch 40]
                                 [--null-repeats 180]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from skinonnx.data.image_statistics import STATISTICS, image_statistics
from skinonnx.data.images import load_rgb
from skinonnx.data.layouts import discover
from skinonnx.deploy.runtime import OnnxClassifier
from skinonnx.monitoring.drift import drift_test

SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "immunohistochemistry",
                  "colorwheel", "retina", "stereo_motorcycle", "logo", "camera", "coins", "moon", "page", "text")


def colour_cast(img: Image.Image, strength: float = 0.12) -> Image.Image:
    arr = np.asarray(img, dtype=np.float64) * np.array([1 + strength, 1.0, 1 - strength])
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))


def blur(img: Image.Image, radius: float = 1.5) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def photo_crops(n: int, rng: np.random.Generator, size: int = 256) -> list[Image.Image]:
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        arr = getattr(skimage.data, name)()
        arr = arr[0] if isinstance(arr, tuple) else arr
        photos.append(Image.fromarray(arr).convert("RGB"))
    crops = []
    for _ in range(n):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(min(photo.size) // 2, min(photo.size) + 1))
        x = int(rng.integers(0, photo.size[0] - side + 1))
        y = int(rng.integers(0, photo.size[1] - side + 1))
        crops.append(photo.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BILINEAR))
    return crops


def quantities(classifier: OnnxClassifier, images: list[Image.Image]) -> dict[str, np.ndarray]:
    prep = classifier.preprocessing
    probs = []
    for start in range(0, len(images), 32):
        batch = np.stack([prep(img) for img in images[start:start + 32]])
        probs.append(classifier.predict_arrays(batch)[:, classifier.contract.positive_index])
    stats = [image_statistics(img) for img in images]
    return {"probability": np.concatenate(probs), **{k: np.array([s[k] for s in stats]) for k in STATISTICS}}


def take(values: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in values.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--data", default=os.environ.get("SKINONNX_ISIC_DATA", "../shared/data/isic-bm"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch", type=int, default=40)
    parser.add_argument("--null-repeats", type=int, default=0,
                        help="Extra same-distribution draws for a tighter false-alarm estimate (cheap).")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    classifier = OnnxClassifier(args.onnx, "cpu", threads=1)
    data = discover(args.data, write_split_file=False)
    paths = [s.path for split in ("val", "test") for s in data.splits.get(split, [])]
    images = [load_rgb(p) for p in paths]
    rng = np.random.default_rng(args.seed)
    pool = quantities(classifier, images)
    shifted = {"colour cast": quantities(classifier, [colour_cast(i) for i in images]),
               "mild colour cast": quantities(classifier, [colour_cast(i, 0.04) for i in images]),
               "blur": quantities(classifier, [blur(i) for i in images]),
               "mild blur": quantities(classifier, [blur(i, 0.6) for i in images])}
    other = quantities(classifier, photo_crops(args.batch * args.repeats, rng))
    n = len(paths)
    results: dict[str, dict[str, int]] = {}
    for r in range(args.repeats):
        order = rng.permutation(n)
        batch, ref = order[:args.batch], order[args.batch:]
        reference = take(pool, ref)
        cases = {"same distribution": take(pool, batch),
                 **{name: take(values, batch) for name, values in shifted.items()},
                 "other source": take(other, np.arange(r * args.batch, (r + 1) * args.batch))}
        for case, new in cases.items():
            for method in ("ks", "mmd"):
                verdict = drift_test(reference, new, method=method, alpha=args.alpha, seed=r)
                results.setdefault(f"{case} / {method}", {"alarms": 0, "repeats": 0})
                results[f"{case} / {method}"]["alarms"] += int(verdict["drift"])
                results[f"{case} / {method}"]["repeats"] += 1
    for r in range(args.null_repeats):
        order = rng.permutation(n)
        for method in ("ks", "mmd"):
            verdict = drift_test(take(pool, order[args.batch:]), take(pool, order[:args.batch]), method=method,
                                 alpha=args.alpha, seed=args.repeats + r)
            key = f"same distribution / {method}"
            results[key]["alarms"] += int(verdict["drift"])
            results[key]["repeats"] += 1
    print(f"pool {n} images (val + test of {args.data}), batch {args.batch}, reference {n - args.batch}, "
          f"{args.repeats} repeats, alpha {args.alpha}, model {args.onnx}")
    for key, value in results.items():
        rate = value["alarms"] / value["repeats"]
        what = "false-alarm rate" if key.startswith("same") else "detection rate"
        print(f"  {key:<28} {what}: {value['alarms']}/{value['repeats']} = {rate:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
