"""Exact and near-duplicate images, and train/test leakage. No torch; scipy for the DCT.

Two images are **exact** duplicates when their files are byte-identical (SHA-256), and **near**
duplicates when their perceptual hashes differ in at most :data:`NEAR_DISTANCE` of 256 bits in the closest
of 13 variants of either image: the 8 right-angle orientations (rotations by 0/90/180/270 degrees, with
and without a mirror flip) and 5 centre crops (2-10 % per side). The hash is imagehash's ``phash`` with
16 x 16 bits: it shrinks every image to a 64 x 64 square first, so re-encoded, resized and squashed copies
land within ~10 bits; the orientations catch flips and rotations, the crops slightly cropped copies.
The 64-bit phash was measured and rejected: distinct ISIC images come within 2 bits of each other once
8 orientations are compared. Hash and distance were chosen by ``benchmarks/audit.py`` (planted copies of
ISIC images vs every pair of distinct ISIC images); the numbers are in docs/audit.md.

A hash match that is not byte-identical is then confirmed on the pixels: the two images' standardised grey
64 x 64 thumbnails, aligned at the best of 8 orientations x 13 crops (0-12 %), may differ by at most
:data:`MAX_PIXEL_DIFFERENCE` (mean absolute difference in standard deviations). Generated lesions (a smooth
blob on skin) share hashes often (2 of 1,225 pairs of the default demo data are within 36 bits); their
pixels never come closer than 0.106, copies stay under 0.075. Only candidates are decoded again (cached).

Pairs are found by a vectorised XOR + popcount over blocks of the (n x 13 variants) x m hash matrix,
both ways round; 10,000 images take well under a minute (benchmarks/audit.py), so no BK-tree is needed
at this scale (a BK-tree prunes little at a 36-of-256-bit radius).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError, ImageError
from ..hashing import file_sha256
from .image_cache import ImageCache
from .images import DEFAULT_MAX_PIXELS, load_rgb
from .layouts import LabeledData

HASH_SIDE = 16  # phash bits per side: 16 x 16 = 256 bits (64 bits cannot tell distinct ISIC images apart)
THUMB_SIDE = 4 * HASH_SIDE  # imagehash's highfreq_factor 4: the DCT runs on a 64 x 64 grey thumbnail
HASH_KEY = "phash16-d4-crops-v1"  # cache key: bump when the hash or its variants change
NEAR_DISTANCE = 36  # bits of 256; measured: copies <= 24, distinct ISIC images >= 52 (docs/audit.md)
DRAFT_SIDE = 256  # large JPEGs decode at a reduced scale >= this (the hash looks at 64 x 64)
WORDS = HASH_SIDE * HASH_SIDE // 64
#: numpy versions of the 8 right-angle orientations of an (h, w) thumbnail (PIL's Image.Transpose members)
ORIENTATIONS: tuple[Callable[[np.ndarray], np.ndarray], ...] = (
    lambda a: a, lambda a: a[:, ::-1], lambda a: a[::-1, :], lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 2),
    lambda a: np.rot90(a, 3), lambda a: a.T, lambda a: np.rot90(a, 2).T)
CROPS = (0.02, 0.04, 0.06, 0.08, 0.10)  # centre crops per side: a slightly cropped copy matches one of them
VARIANTS = len(ORIENTATIONS) + len(CROPS)
BLOCK = 8  # query images per vectorised block: 8 x 13 x m x 4 words stays small


def _thumb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.LANCZOS))


def perceptual_hashes(image: Image.Image) -> np.ndarray:
    """(13, 4) uint64: imagehash's ``phash(image, 16)`` of the image in its 8 orientations, then of 5 centre crops.

    Crops are cut from a 128 x 128 thumbnail (the same region, a fifth of the resampling work).

    The same algorithm as imagehash.phash (grey 64 x 64 Lanczos thumbnail, scipy.fftpack DCT-II on both
    axes, the 16 x 16 lowest frequencies above their median), run once on a stack of the 13 variants:
    13 calls of imagehash would cost ~2 ms each. tests/audit/test_duplicates.py checks bit-equality
    with imagehash. Needs scipy only, so `train`'s leakage check adds no dependency.
    """
    import scipy.fftpack

    base = _thumb(image)
    stack = [orient(base) for orient in ORIENTATIONS]
    # crops from a 2x thumbnail: five Lanczos resizes of the full image would triple the time per image
    double = image.convert("L").resize((2 * THUMB_SIDE, 2 * THUMB_SIDE), Image.Resampling.LANCZOS)
    for fraction in CROPS:
        d = round(2 * THUMB_SIDE * fraction)
        stack.append(_thumb(double.crop((d, d, 2 * THUMB_SIDE - d, 2 * THUMB_SIDE - d))))
    pixels = np.stack(stack).astype(np.float64)
    coeffs = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=1), axis=2)[:, :HASH_SIDE, :HASH_SIDE]
    flat = coeffs.reshape(len(stack), -1)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64)


@dataclass(frozen=True)
class Fingerprint:
    sha256: str
    hashes: np.ndarray  # (VARIANTS, WORDS) uint64, from perceptual_hashes


@dataclass(frozen=True)
class DuplicatePair:
    first: int  # indices into the fingerprinted list, first < second
    second: int
    distance: int  # Hamming distance (of 256 bits) in the closest variant; 0 for byte-identical files
    exact: bool


def encode_hashes(hashes: np.ndarray) -> str:
    """An image's perceptual hashes as text (the hash cache's and the backbone fingerprints' format)."""
    return base64.b64encode(hashes.astype(">u8").tobytes()).decode("ascii")


def decode_hashes(text: str) -> np.ndarray | None:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    if len(raw) != VARIANTS * WORDS * 8:
        return None
    return np.frombuffer(raw, ">u8").astype(np.uint64).reshape(VARIANTS, WORDS)


def fingerprint_files(paths: Sequence[Path], cache: ImageCache | None = None, *,
                      max_pixels: int = DEFAULT_MAX_PIXELS,
                      extra: Callable[[Image.Image], dict] | None = None, extra_key: str = "",
                      progress: Callable[[int], None] | None = None
                      ) -> tuple[list[Fingerprint | None], list[dict | None], dict[int, str]]:
    """Fingerprints (None for unreadable files), ``extra(image)`` records, and the problems by index.

    Each file is decoded at most once (through :func:`load_rgb`), for the hash and ``extra`` together;
    a cache hit (same SHA-256, same hash version) decodes nothing.
    """
    cache = cache if cache is not None else ImageCache(None)
    prints: list[Fingerprint | None] = []
    extras: list[dict | None] = []
    problems: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            digest = cache.sha256(Path(path), file_sha256)
            cached = cache.get(digest, HASH_KEY)
            hashes = decode_hashes(cached) if isinstance(cached, str) else None
            record = cache.get(digest, extra_key) if extra is not None else None
            if hashes is None or (extra is not None and not isinstance(record, dict)):
                image = load_rgb(path, max_pixels=max_pixels, draft_size=DRAFT_SIDE)
                if hashes is None:
                    hashes = perceptual_hashes(image)
                    cache.put(digest, HASH_KEY, encode_hashes(hashes))
                if extra is not None:
                    record = extra(image)
                    cache.put(digest, extra_key, record)
            prints.append(Fingerprint(digest, hashes))
            extras.append(record)
        except ImageError as exc:
            prints.append(None)
            extras.append(None)
            problems[i] = exc.problem
        except OSError as exc:
            prints.append(None)
            extras.append(None)
            problems[i] = f"cannot read: {exc.strerror or exc}"
        if progress is not None:
            progress(1)
    return prints, extras, problems


def hash_matrix(prints: Sequence[Fingerprint | None]) -> np.ndarray:
    """(n, VARIANTS, WORDS) uint64; rows of unreadable images are zeros (masked out by :func:`near_pairs`)."""
    out = np.zeros((len(prints), VARIANTS, WORDS), np.uint64)
    for i, p in enumerate(prints):
        if p is not None:
            out[i] = p.hashes
    return out


def _distances(queries: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """(b, m): the smallest Hamming distance between any variant of each query and each stored hash."""
    total = np.zeros((len(queries), queries.shape[1], len(stored)), np.uint16)
    for w in range(WORDS):
        total += np.bitwise_count(queries[:, :, w, None] ^ stored[None, None, :, w])
    return total.min(axis=1)


def near_pairs(queries: np.ndarray, index: np.ndarray, max_distance: int, *, same: bool,
               valid_queries: np.ndarray | None = None, valid_index: np.ndarray | None = None
               ) -> dict[tuple[int, int], int]:
    """``{(i, j): distance}`` for query i and index j within ``max_distance`` in either direction.

    Every variant of one side (8 orientations, 5 crops) is compared with the other side as stored, both
    ways round, so a rotated, flipped or cropped copy is found whichever of the two is the original.
    ``same``: queries and index are one list; pairs come back once, as (i, j) with i < j.
    """
    ok_q = np.ones(len(queries), bool) if valid_queries is None else valid_queries
    ok_i = np.ones(len(index), bool) if valid_index is None else valid_index
    found: dict[tuple[int, int], int] = {}

    def sweep(a: np.ndarray, b: np.ndarray, ok_a: np.ndarray, ok_b: np.ndarray, swap: bool) -> None:
        stored = np.ascontiguousarray(b[:, 0, :])
        for start in range(0, len(a), BLOCK):
            distance = _distances(a[start:start + BLOCK], stored)
            hit = (distance <= max_distance) & ok_a[start:start + BLOCK, None] & ok_b[None, :]
            for i, j in zip(*np.nonzero(hit), strict=True):
                i = start + int(i)
                key = (int(j), i) if swap else (i, int(j))
                if same:
                    if key[0] == key[1]:
                        continue
                    key = (min(key), max(key))
                d = int(distance[i - start, j])
                found[key] = min(d, found.get(key, d))

    sweep(queries, index, ok_q, ok_i, False)
    if not same:  # the other direction; for one list, the first sweep already saw every (j, i)
        sweep(index, queries, ok_i, ok_q, True)
    return found


VERIFY_KEY = "aligned-nmae-v1:"  # cache key prefix (+ the other file's SHA-256) of a verified pair
VERIFY_SIDE = 64
VERIFY_CROPS = tuple(k / 100 for k in range(13))  # 0-12 % per side in 1 % steps: finer than the hash's crops
MAX_PIXEL_DIFFERENCE = 0.09  # measured: copies <= 0.075 once aligned; distinct generated lesions >= 0.106


def _standard_thumbs(image: Image.Image) -> list[np.ndarray]:
    """Standardised 64 x 64 grey thumbnails of each centre crop in :data:`VERIFY_CROPS`."""
    grey = image.convert("L")
    w, h = grey.size
    out = []
    for fraction in VERIFY_CROPS:
        dx, dy = round(w * fraction), round(h * fraction)
        thumb = np.asarray(grey.crop((dx, dy, w - dx, h - dy)).resize((VERIFY_SIDE, VERIFY_SIDE),
                                                                      Image.Resampling.LANCZOS), np.float64)
        out.append((thumb - thumb.mean()) / (thumb.std() + 1e-6))
    return out


def pixel_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of the standardised grey thumbnails, at the best of 8 orientations x 13 crops.

    The check on a hash match: generated lesions (a smooth blob on skin) can share a perceptual hash, but not
    their pixels. 0 for the same picture; brightness and contrast changes do not count.
    """
    ta, tb = _standard_thumbs(a), _standard_thumbs(b)
    best = np.inf
    aligned = [(ta[k], tb[0]) for k in range(len(VERIFY_CROPS))] + [(ta[0], tb[k]) for k in range(1, len(ta))]
    for x, y in aligned:
        for orient in ORIENTATIONS:
            best = min(best, float(np.abs(orient(x) - y).mean()))
    return best


def confirmed_difference(first: tuple[Path, Fingerprint], second: tuple[Path, Fingerprint], cache: ImageCache,
                         max_pixels: int) -> float | None:
    """The aligned pixel difference of a hash match (cached by the two digests); None if a file became unreadable."""
    (path_a, fa), (path_b, fb) = sorted([first, second], key=lambda item: item[1].sha256)
    key = VERIFY_KEY + fb.sha256
    known = cache.get(fa.sha256, key)
    if isinstance(known, float):
        return known
    try:
        value = pixel_difference(load_rgb(path_a, max_pixels=max_pixels, draft_size=DRAFT_SIDE),
                                 load_rgb(path_b, max_pixels=max_pixels, draft_size=DRAFT_SIDE))
    except (ImageError, OSError):
        return None
    cache.put(fa.sha256, key, round(value, 4))
    return value


def duplicate_pairs(paths: Sequence[Path], prints: Sequence[Fingerprint | None], cache: ImageCache | None = None, *,
                    max_distance: int = NEAR_DISTANCE, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[DuplicatePair]:
    """Every exact or near pair among ``prints`` (of ``paths``), closest first.

    Byte-identical files hash identically; a near match of the hashes is confirmed on the pixels
    (:func:`pixel_difference`), which decodes the two files of each candidate once (cached).
    """
    cache = cache if cache is not None else ImageCache(None)
    matrix = hash_matrix(prints)
    valid = np.array([p is not None for p in prints], bool)
    pairs = []
    for (i, j), d in near_pairs(matrix, matrix, max_distance, same=True, valid_queries=valid,
                                valid_index=valid).items():
        a, b = prints[i], prints[j]
        assert a is not None and b is not None
        if a.sha256 == b.sha256:
            pairs.append(DuplicatePair(i, j, 0, True))
            continue
        difference = confirmed_difference((Path(paths[i]), a), (Path(paths[j]), b), cache, max_pixels)
        if difference is not None and difference <= MAX_PIXEL_DIFFERENCE:
            pairs.append(DuplicatePair(i, j, d, False))
    return sorted(pairs, key=lambda p: (p.distance, p.first, p.second))


@dataclass(frozen=True)
class LeakedPair:
    train_path: Path
    other_path: Path
    other_split: str
    distance: int
    exact: bool
    labels_differ: bool

    def describe(self, root: Path) -> str:
        def rel(p: Path) -> str:
            return p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
        kind = "identical file" if self.exact else f"near copy, {self.distance} bits"
        conflict = ", labels differ" if self.labels_differ else ""
        return f"{rel(self.other_path)} = {rel(self.train_path)} ({kind}{conflict})"


def leakage(data: LabeledData, cache: ImageCache | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS,
            splits: Sequence[str] = ("val", "test"), max_distance: int = NEAR_DISTANCE,
            progress: Callable[[int], None] | None = None) -> list[LeakedPair]:
    """Images of ``splits`` that duplicate a training image (exactly or nearly), closest first.

    Unreadable images are left to the loaders, which refuse them with their own message.
    """
    train = data.splits.get("train", [])
    others = [(s, split) for split in splits for s in data.splits.get(split, [])]
    if not train or not others:
        return []
    samples = list(train) + [s for s, _ in others]
    cache = cache if cache is not None else ImageCache(None)
    prints, _, _ = fingerprint_files([s.path for s in samples], cache, max_pixels=max_pixels, progress=progress)
    matrix = hash_matrix(prints)
    valid = np.array([p is not None for p in prints], bool)
    n = len(train)
    found = near_pairs(matrix[n:], matrix[:n], max_distance, same=False, valid_queries=valid[n:],
                       valid_index=valid[:n])
    pairs = []
    for (i, j), d in found.items():
        other, split = others[i]
        a, b = prints[n + i], prints[j]
        assert a is not None and b is not None
        exact = a.sha256 == b.sha256
        if not exact:
            difference = confirmed_difference((other.path, a), (train[j].path, b), cache, max_pixels)
            if difference is None or difference > MAX_PIXEL_DIFFERENCE:
                continue
        pairs.append(LeakedPair(train[j].path, other.path, split, 0 if exact else d, exact,
                                train[j].label != other.label))
    cache.save()
    return sorted(pairs, key=lambda p: (p.distance, str(p.other_path), str(p.train_path)))


class LeakageError(DataError):
    """Evaluation images duplicate training images: a test number would be measured on training data."""


SHOWN_PAIRS = 5


def pair_listing(shown: Sequence[str], total: int) -> str:
    """The first :data:`SHOWN_PAIRS` pairs' descriptions, and how many more, for a leakage message."""
    more = f"; ... and {total - SHOWN_PAIRS} more" if total > SHOWN_PAIRS else ""
    return "; ".join(shown) + more


def leakage_check(data: LabeledData, *, allow: bool, cache: ImageCache | None = None,
                  max_pixels: int = DEFAULT_MAX_PIXELS, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """`train`'s check before it trains: refuse (:class:`LeakageError`) when val or test images duplicate training
    images, unless ``allow``; the record returned goes into config.json and the model card.

    Cached by file content (:class:`ImageCache`): the second run on the same data decodes nothing.
    """
    cache = cache if cache is not None else ImageCache.default()
    pairs = leakage(data, cache, max_pixels=max_pixels)
    if cache.note:
        echo(cache.note)
    root = data.root.resolve()
    shown = [p.describe(root) for p in pairs[:SHOWN_PAIRS]]
    record = {"checked": True, "pairs": len(pairs), "allowed": bool(allow and pairs),
              "by_split": {s: sum(p.other_split == s for p in pairs) for s in ("val", "test")},
              "examples": shown, "near_distance_bits": NEAR_DISTANCE, "hash": HASH_KEY}
    if not pairs:
        return record
    listing = pair_listing(shown, len(pairs))
    if not allow:
        raise LeakageError(f"{len(pairs)} validation/test image(s) duplicate training images (leakage): {listing}. "
                           "Remove or exclude them (`audit --data DIR` writes a report and an exclusion list), "
                           "or pass --allow-leakage to train anyway (recorded in the run and its model card)")
    echo(f"warning: training despite leakage (--allow-leakage): {len(pairs)} pair(s): {listing}")
    return record


def leakage_card_line(record: dict[str, Any] | None) -> str:
    """The model card's line for a run's :func:`leakage_check` record (config.json ``leakage_check``)."""
    if not record:
        return ("- **Leakage check:** not recorded (a run from before the check, or not trained by skinonnx); "
                "`audit --data DIR` checks the data")
    if not record.get("pairs"):
        return ("- **Leakage check:** no validation or test image duplicates a training image (byte-identical or "
                "a near copy: re-encoded, resized, cropped, flipped, rotated)")
    examples = "; ".join(record.get("examples") or [])
    return (f"- **Leakage check:** {record['pairs']} validation/test image(s) duplicate training images and the "
            f"model was trained anyway (`--allow-leakage`); numbers measured on them are optimistic. {examples}")
