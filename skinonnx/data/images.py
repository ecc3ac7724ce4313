"""Safe image decoding for untrusted files.

Every image the tool reads (training, evaluation, parity, prediction) goes through
:func:`load_rgb`, so all paths see the same pixels and the same refusals:

* not a regular file, empty, unreadable, or not an image  -> :class:`ImageError`
* more pixels than ``max_pixels`` (decompression bombs)     -> refused *before* decoding
* smaller than ``MIN_SIDE`` on a side                       -> refused
* truncated / corrupt data                                  -> refused
* EXIF orientation applied (phone photos come out upright)
* any mode (palette, alpha, CMYK, grey, 16-bit) -> 8-bit RGB; alpha composited on white
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: larger than any dermatoscope; bombs are far bigger
MIN_SIDE = 8

# We enforce our own limit before decoding; Pillow's own check is disabled so that a
# user-raised limit (--max-pixels) is the one that applies.
Image.MAX_IMAGE_PIXELS = None


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_rgb(path: str | os.PathLike[str], *, max_pixels: int = DEFAULT_MAX_PIXELS,
             draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` into an upright 8-bit RGB image, or raise :class:`ImageError`.

    ``draft_size``: when the file is a JPEG much larger than needed, let libjpeg decode at
    a reduced scale (1/2, 1/4, 1/8) whose both sides stay >= ``draft_size``. Deterministic,
    and used identically by training-time evaluation and the runtime.
    """
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(path, formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(path, "not a supported image (JPEG, PNG, BMP, TIFF or WebP)") from None
    except OSError as exc:
        if exc.errno is None:  # Pillow's own OSError("Truncated File Read"...): bad bytes, not a bad disk
            raise ImageError(path, f"corrupt or truncated image data ({exc})") from None
        raise ImageError(path, f"cannot open: {exc.strerror or exc}") from None
    except Exception as exc:  # untrusted bytes: a header parser failure is a bad file, never a crash
        raise ImageError(path, f"corrupt image header ({type(exc).__name__})") from None
    with img:
        width, height = img.size
        if width * height > max_pixels:
            raise ImageError(
                path, f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
                "(possible decompression bomb; raise it with --max-pixels if the file is trusted)")
        if min(width, height) < MIN_SIDE:
            raise ImageError(path, f"image is {width}x{height}; at least {MIN_SIDE}x{MIN_SIDE} pixels are needed")
        if draft_size and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (draft_size, draft_size))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                img.load()
                img = ImageOps.exif_transpose(img)
        except MemoryError:
            raise ImageError(path, f"out of memory decoding {width}x{height} pixels") from None
        except Exception as exc:  # untrusted bytes: any decoder failure is a bad file, never a crash
            raise ImageError(path, f"corrupt or truncated image data ({exc or type(exc).__name__})") from None
        return _to_rgb(img)


def _check_file(path: Path) -> None:
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except OSError as exc:
        raise ImageError(path, f"cannot access: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(path, "not a regular file")
    if info.st_size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageError(path, "permission denied")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB with documented, runtime-reproducible rules."""
    mode = img.mode
    if mode == "RGB":
        return img.copy() if img.readonly else img
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        grey = np.clip(np.rint(arr / scale * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode == "P":
        return img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
