"""report.html's case images: ``report_files/NNNNN.jpg``, the crop the model saw beside it under its heatmap.

Made in threads from the evaluated files (decode, resize, crop exactly as the model saw them; the
map blended at thumbnail size: a 7 x 7 map loses nothing), 226 x 112 px JPEGs of ~4.5 kB. No torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from ..atomic import write_with
from ..cpus import physical_cores
from ..data.images import DEFAULT_MAX_PIXELS
from ..data.preprocessing import Preprocessing
from ..deploy.cam_overlays import model_crop
from ..errors import ImageError
from ..overlay import blend, normalize_map

FILES_DIR = "report_files"
THUMB = 112  # pixels per half of a case image: [crop | crop + heatmap]
_THUMB_NAME = re.compile(r"^\d{5,}\.jpg$")


def case_image(path: str, prep: Preprocessing, cam: np.ndarray | None, max_pixels: int = DEFAULT_MAX_PIXELS,
               size: int = THUMB) -> Image.Image:
    """[crop | crop + heatmap] at ``size`` px per half (just the crop without a map)."""
    small = model_crop(path, prep, max_pixels).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    halves = [small]
    if cam is not None:  # blended at thumbnail size: the map is 7 x 7, nothing finer is lost
        halves.append(blend(small, normalize_map(cam)))
    panel = Image.new("RGB", (size * len(halves) + 2 * (len(halves) - 1), size), (255, 255, 255))
    for k, half in enumerate(halves):
        panel.paste(half, (k * (size + 2), 0))
    return panel


def write_case_images(paths: Sequence[str], cams: Sequence[np.ndarray | None] | None, prep: Preprocessing,
                      folder: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None
                      ) -> list[str | None]:
    """``folder/NNNNN.jpg`` per image (decoded in threads); relative names, None where an image failed.

    Case images of an earlier, larger run that this run did not rewrite are removed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    maps = list(cams) if cams is not None else [None] * len(paths)

    def one(i: int) -> str | None:
        name = f"{i:05d}.jpg"
        try:
            image = case_image(paths[i], prep, maps[i], max_pixels)
        except (ImageError, OSError):
            return None
        write_with(folder / name, lambda tmp: image.save(tmp, format="JPEG", quality=82))
        return f"{folder.name}/{name}"

    with ThreadPoolExecutor(max_workers=workers or max(1, physical_cores())) as pool:
        written = list(pool.map(one, range(len(paths))))
    keep = {Path(w).name for w in written if w}
    for stale in folder.iterdir():
        if _THUMB_NAME.match(stale.name) and stale.name not in keep:
            stale.unlink(missing_ok=True)
    return written
