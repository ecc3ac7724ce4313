"""Image quality: too dark, too bright, low information, extreme aspect ratio (CleanVision); blurry and tiny (ours).

CleanVision's ``Imagelab`` opens files itself (``PIL.Image.open``, no pixel limit once skinonnx has lifted
Pillow's own: a decompression bomb would be decoded) and decodes every image twice (scores, then hashes),
so the audit feeds CleanVision's own per-image properties and its own scoring (default thresholds,
``ImagePropertyIssueManager``) with the images :func:`skinonnx.data.images.load_rgb` decoded once for
hashing. On isic-bm this flags the same images as ``Imagelab.find_issues`` (benchmarks/audit.py).
CleanVision's ``odd_size`` is relative to the data set; an absolute "tiny" check (shorter side under
:data:`TINY_SIDE`, a quarter of the 224-px model input: upscaling by more than 4x invents the detail the
model would look at) is ours.

**Blurry** is ours too: CleanVision's blur score is the edge spread of a 64-px thumbnail, and it clears
any image whose grey histogram is narrow, which a dermoscopy image (even skin around a lesion) always is:
of 40 isic-bm images blurred with a 5-px Gaussian it flagged none (benchmarks/audit.py). Ours is the
variance of the Laplacian at 256 px on the longer side (Pech-Pacheco et al. 2000), flagged when its log is
more than :data:`BLUR_MADS` robust standard deviations below the data set's median: on isic-bm no original
is flagged and 93 % of images blurred with a 1.5-px Gaussian are. Being relative, it needs
:data:`BLUR_MIN_IMAGES` readable images.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

QUALITY_KEY = "cleanvision-0.3+laplacian256-v2"  # cache key of the raw measurements
ISSUES = ("dark", "light", "low_information", "odd_aspect_ratio")  # CleanVision's
TINY_SIDE = 56
SHARPNESS_SIDE = 256
BLUR_MADS = 3.0
BLUR_MIN_IMAGES = 20
EXPLAIN = {
    "blurry": "blurry (far less fine detail than the data set's typical image)",
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
    for issue in ("dark", "odd_aspect_ratio", "low_information"):  # "light" reads dark's brightness
        raw.update({k: float(v) for k, v in properties[issue].calculate(image).items()})
    raw["laplacian_variance"] = sharpness(image)
    return raw


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian of the grey image scaled to 256 px on its longer side."""
    from scipy import ndimage

    grey = image.convert("L").convert("F")  # float: no rounding noise added by the resize
    scale = SHARPNESS_SIDE / max(grey.size)
    if scale != 1:
        grey = grey.resize((max(3, round(grey.width * scale)), max(3, round(grey.height * scale))),
                           Image.Resampling.BILINEAR)
    return float(ndimage.laplace(np.asarray(grey, np.float64)).var())


def find_quality_issues(records: list[dict[str, float] | None]) -> list[dict[str, float]]:
    """Per image, ``{issue: score}`` for each issue it has.

    Scores: CleanVision's (0-1, lower is worse), tiny: the shorter side, blurry: the robust z-score.
    """
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
    if len(rows) >= BLUR_MIN_IMAGES:
        log_sharp = np.log(np.array([records[i]["laplacian_variance"] for i in rows]) + 1e-6)  # type: ignore[index]
        median = np.median(log_sharp)
        spread = 1.4826 * np.median(np.abs(log_sharp - median)) or 1e-6
        z = (log_sharp - median) / spread
        for k in np.nonzero(z < -BLUR_MADS)[0]:
            out[rows[k]]["blurry"] = round(float(z[k]), 2)  # robust z-score of log sharpness
    return out
