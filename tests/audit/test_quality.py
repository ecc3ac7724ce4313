"""Image-quality flags on constructed images: CleanVision's properties on our decoder, and our `tiny`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from skinonnx.audit.quality import find_quality_issues, measure
from skinonnx.data.images import load_rgb


def test_dark_bright_blurry_tiny_and_odd_shapes_are_flagged(generated: Path) -> None:
    lesions = sorted((generated / "train").glob("*/*.png"))[:28]
    images = {
        "dark": Image.new("RGB", (128, 128), (6, 5, 7)),
        "light": Image.new("RGB", (128, 128), (252, 252, 250)),
        "blurry": load_rgb(lesions[0]).filter(ImageFilter.GaussianBlur(8)),  # generated lesions are smooth already
        "tiny": load_rgb(lesions[1]).resize((40, 40)),
        "odd_aspect_ratio": load_rgb(lesions[2]).resize((300, 60)),
    }
    normal = [load_rgb(p) for p in lesions[3:]]
    records = [measure(im) for im in [*images.values(), *normal]]
    found = find_quality_issues(records)
    for k, name in enumerate(images):
        assert name in found[k], (name, found[k])
    assert "low_information" in found[0]  # one flat colour has no information either
    assert found[len(images):] == [{}] * len(normal)


def test_blur_is_judged_against_enough_images(generated: Path) -> None:
    lesions = sorted((generated / "train").glob("*/*.png"))[:10]
    blurred = load_rgb(lesions[0]).filter(ImageFilter.GaussianBlur(2))
    records = [measure(blurred)] + [measure(load_rgb(p)) for p in lesions[1:]]
    assert find_quality_issues(records) == [{}] * 10  # 10 images: no robust median to compare with


def test_unreadable_images_have_no_quality_record() -> None:
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8))
    assert find_quality_issues([None, measure(noise), None]) == [{}, {}, {}]
