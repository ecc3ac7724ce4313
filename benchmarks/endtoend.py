"""End-to-end `predict` (decode + preprocess + inference, through OnnxClassifier.predict_files)
against model-only inference on the same images, and JPEG draft-mode decoding of large originals."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from skinonnx.data.images import load_rgb

from .peak import median


def end_to_end(classifier, paths: list[Path], *, batch_size: int, repeats: int) -> dict[str, float]:
    """images/s of predict_files vs predict_arrays on pre-decoded batches, interleaved per repeat."""
    prep = classifier.preprocessing
    arrays = [prep.from_file(p) for p in paths]  # untimed; also warms the page cache
    batches = [np.stack(arrays[i:i + batch_size]) for i in range(0, len(arrays), batch_size)]
    classifier.predict_arrays(batches[0])
    model_rates, e2e_rates = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            classifier.predict_arrays(batch)
        model_rates.append(len(paths) / (time.perf_counter() - start))
        start = time.perf_counter()
        done = sum(1 for pred in classifier.predict_files(paths, batch_size=batch_size) if pred.ok)
        e2e_rates.append(done / (time.perf_counter() - start))
    model_only, e2e = median(model_rates), median(e2e_rates)
    return {"images": len(paths), "batch_size": batch_size, "model_only_images_per_s": model_only,
            "end_to_end_images_per_s": e2e, "fraction_of_model_only": e2e / model_only,
            "pairwise_fraction": median([e / m for e, m in zip(e2e_rates, model_rates, strict=True)])}


def make_large_jpegs(sources: list[Path], folder: Path, *, count: int, size: tuple[int, int] = (4000, 3000)
                     ) -> list[Path]:
    """Upscale a few real images to dermatoscope-original size (4000x3000 JPEG, quality 90), copy to ``count``."""
    folder.mkdir(parents=True, exist_ok=True)
    distinct = []
    for i, src in enumerate(sources[:4]):
        target = folder / f"large_{i}.jpg"
        with Image.open(src) as img:
            img.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, quality=90)
        distinct.append(target)
    out = []
    for i in range(count):
        target = folder / f"lesion_{i:03d}.jpg"
        shutil.copy(distinct[i % len(distinct)], target)
        out.append(target)
    return out


def draft_speedup(paths: list[Path], prep, *, repeats: int = 2) -> dict[str, float]:
    """ms per image to decode + preprocess, with JPEG draft (DCT) scaling vs a full-size decode."""
    def per_image(fn) -> float:
        times = []
        for _ in range(repeats):
            for p in paths:
                start = time.perf_counter()
                fn(p)
                times.append(time.perf_counter() - start)
        return median(times) * 1e3

    full = per_image(lambda p: prep(load_rgb(p)))
    draft = per_image(prep.from_file)
    with Image.open(paths[0]) as img:
        original = img.size
        img.draft("RGB", (prep.resize_size, prep.resize_size))
        decoded = img.size
    return {"source_size": f"{original[0]}x{original[1]}", "draft_decoded_size": f"{decoded[0]}x{decoded[1]}",
            "full_decode_ms": full, "draft_decode_ms": draft, "speedup": full / draft}
