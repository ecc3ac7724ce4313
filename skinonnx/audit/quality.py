"""Image quality: blurry, too dark, too bright, low information, extreme aspect ratio (CleanVision), and tiny.

CleanVision's ``Imagelab`` opens files itself (``PIL.Image.open``, no pixel limit once skinonnx has lifted
Pillow's own: a decompression bomb would be decoded) and decodes every image twice (scores, then hashes),
so the audit feeds CleanVision's own per-image properties and its own scoring (default thresholds,
``ImagePropertyIssueManager``) with the images :func:`skinonnx.data.images.load_rgb` decoded once for
hashing. On isic-bm this flags the same images as ``Imagelab.find_issues`` (benchmarks/audit.py).
CleanVision's ``odd_size`` is relative to the data set; an absolute "tiny" check (shorter side under
:data:`TINY_SIDE`, a quarter of the 224-px model input: upscaling by more than 4x invents the detail the
model would look at) is ours.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from PIL import Image

QUALITY_KEY = "cleanvision-0.3-v1"  # cache key of the raw measurements
ISSUES = ("blurry", "dark", "light", "low_information", "odd_aspect_ratio")
TINY_SIDE = 56
EXPLAIN = {
    "blurry": "blurry (few edges)",
    "dark": "too dark",
    "light": "too bright",
    "low_information": "low information (little texture or colour)",
    "odd_aspect_ratio": "extreme aspect ratio",
    "tiny": f"tiny (shorter side under {TINY_SIDE} px)",
}


@lru_cache(maxsize=1)
def _manager() -> Any:
    from cleanvision.issue_managers.image_property_issue_manager import ImagePropertyIssueManager

    return ImagePropertyIssueManager()


def measure(image: Image.Image) -> dict[str, float]:
    """CleanVision's raw per-image properties (and the size), from an already decoded RGB image."""
    properties = _manager().image_properties
    raw: dict[str, float] = {"width": float(image.width), "height": float(image.height)}
    for issue in ("dark", "odd_aspect_ratio", "low_information", "blurry"):  # "light" reads dark's brightness
        raw.update({k: float(v) for k, v in properties[issue].calculate(image).items()})
    return raw


def find_quality_issues(records: list[dict[str, float] | None]) -> list[dict[str, float]]:
    """Per image, ``{issue: score}`` for each issue it has (CleanVision scores: lower is worse; tiny: the side)."""
    import pandas as pd

    out: list[dict[str, float]] = [{} for _ in records]
    rows = [i for i, r in enumerate(records) if r is not None]
    if not rows:
        return out
    frame = pd.DataFrame([records[i] for i in rows], index=rows)
    manager = _manager()
    manager.issues = pd.DataFrame(index=frame.index)
    manager.update_issues(frame, list(ISSUES))
    for issue in ISSUES:
        flagged = manager.issues[f"is_{issue}_issue"]
        scores = manager.issues[f"{issue}_score"]
        for i in flagged.index[flagged.to_numpy(bool)]:
            out[int(i)][issue] = round(float(scores[i]), 4)
    for i in rows:
        side = min(records[i]["width"], records[i]["height"])  # type: ignore[index]
        if side < TINY_SIDE:
            out[i]["tiny"] = side
    return out
