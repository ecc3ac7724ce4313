"""What a backbone saw: its card (``X.card.json``), the fingerprints of its pretraining images (``X.images.json``),
and the check of a fine-tuning set against them. Torch-free.

A backbone file (``pretrain``) is weights learnt on one data set and reused on another. A fine-tuning
validation or test image that the backbone was pretrained on would be scored by a model that has seen it:
`train --weights BACKBONE` refuses that as it refuses split leakage (``--allow-leakage`` to go on, recorded).
The pretraining images are kept as fingerprints (SHA-256 + the audit's perceptual hashes, data/duplicates.py),
so the check needs no copy of the pretraining data; a near match is confirmed on the pixels where the
pretraining image is still on this machine, and reported as a hash match otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import write_text
from ..errors import DataError
from ..hashing import file_sha256
from .duplicates import (
    HASH_KEY,
    MAX_PIXEL_DIFFERENCE,
    NEAR_DISTANCE,
    SHOWN_PAIRS,
    VARIANTS,
    WORDS,
    Fingerprint,
    LeakageError,
    confirmed_difference,
    decode_hashes,
    encode_hashes,
    fingerprint_files,
    hash_matrix,
    near_pairs,
    pair_listing,
)
from .image_cache import ImageCache
from .images import DEFAULT_MAX_PIXELS
from .layouts import LabeledData, Sample

CARD_FORMAT = "skinonnx-backbone-card"
IMAGES_FORMAT = "skinonnx-pretraining-images"
FORMAT_VERSION = 1
SEEN_SPLITS = ("train", "val")  # train: in the gradients; val: chose the epoch kept


def card_path(backbone: str | Path) -> Path:
    """``X.pt`` -> ``X.card.json``: the card lives beside the weights."""
    return Path(backbone).with_suffix(".card.json")


def images_path(backbone: str | Path) -> Path:
    """``X.pt`` -> ``X.images.json``: the pretraining images' fingerprints."""
    return Path(backbone).with_suffix(".images.json")


def fingerprint_seen(data: LabeledData, splits: Sequence[str] = SEEN_SPLITS, *, cache: ImageCache | None = None,
                     max_pixels: int = DEFAULT_MAX_PIXELS, progress: Callable[[int], None] | None = None
                     ) -> dict[str, Any]:
    """The images file's content: every image of ``splits`` with its path (relative to the data root), split,
    SHA-256 and perceptual hashes (all variants, data/duplicates.py). Cached like the audit's."""
    cache = cache if cache is not None else ImageCache.default()
    samples = [(s, split) for split in splits for s in data.splits.get(split, [])]
    prints, _, problems = fingerprint_files([s.path for s, _ in samples], cache, max_pixels=max_pixels,
                                            progress=progress)
    cache.save()
    root = data.root.resolve()
    images = []
    for (sample, split), fp in zip(samples, prints, strict=True):
        if fp is None:
            continue  # unreadable: the loaders skipped it, so the backbone never saw it
        path = sample.path.resolve()
        images.append({"path": path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path),
                       "split": split, "sha256": fp.sha256, "hashes": encode_hashes(fp.hashes)})
    return {"format": IMAGES_FORMAT, "format_version": FORMAT_VERSION, "hash": HASH_KEY, "root": str(root),
            "splits": list(splits), "unreadable": len(problems), "images": images}


def write_images(path: Path, record: dict[str, Any]) -> str:
    """Write the images file atomically; returns its SHA-256 (the card records it)."""
    write_text(path, json.dumps(record, separators=(",", ":")) + "\n")
    return file_sha256(path)


def read_card(backbone: str | Path) -> dict[str, Any] | None:
    """The backbone's card, checked against the file (SHA-256); None when the file has no card beside it."""
    backbone, path = Path(backbone), card_path(backbone)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a backbone card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise DataError(f"{path}: not a backbone card (no '{CARD_FORMAT}' marker)")
    if card.get("sha256") != file_sha256(backbone):
        raise DataError(f"{path}: the card is not {backbone}'s (its SHA-256 differs from the card's): write the "
                        "backbone again with `pretrain`, or remove the stale card")
    return card


def read_images(backbone: str | Path, card: dict[str, Any]) -> dict[str, Any]:
    """The pretraining images' fingerprints named by ``card``, checked (SHA-256, format, hash version)."""
    path = images_path(backbone)
    if not path.is_file():
        raise DataError(f"{path}: missing: the pretraining images of {Path(backbone).name} are needed for the "
                        "leakage check (pass --allow-leakage to fine-tune without it, recorded)")
    if card.get("images_sha256") and file_sha256(path) != card["images_sha256"]:
        raise DataError(f"{path}: its SHA-256 differs from the card's images_sha256: not this backbone's images")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a pretraining images file ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != IMAGES_FORMAT or not isinstance(
            record.get("images"), list):
        raise DataError(f"{path}: not a pretraining images file (no '{IMAGES_FORMAT}' marker)")
    if record.get("hash") != HASH_KEY:
        raise DataError(f"{path}: hashes of another version ({record.get('hash')}, this skinonnx: {HASH_KEY}); "
                        "write the backbone again with `pretrain --from-run RUN`")
    return record


def _stored(record: dict[str, Any]) -> tuple[list[Fingerprint], list[dict[str, Any]]]:
    prints, entries = [], []
    for entry in record["images"]:
        hashes = decode_hashes(str(entry.get("hashes", "")))
        if hashes is None or hashes.shape != (VARIANTS, WORDS):
            raise DataError(f"pretraining images file: damaged entry for {entry.get('path')}")
        prints.append(Fingerprint(str(entry["sha256"]), hashes))
        entries.append(entry)
    return prints, entries


def seen_pairs(data: LabeledData, record: dict[str, Any], *, splits: Sequence[str] = ("val", "test"),
               cache: ImageCache | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[dict[str, Any]]:
    """Images of ``splits`` that are copies (exact or near) of a pretraining image, closest first.

    A near hash match is confirmed on the pixels when the pretraining image is at its recorded place;
    otherwise it counts, marked ``confirmed: False`` (distinct dermoscopy images stay >= 52 bits apart).
    """
    queries: list[tuple[Sample, str]] = [(s, split) for split in splits for s in data.splits.get(split, [])]
    seen, entries = _stored(record)
    if not queries or not seen:
        return []
    cache = cache if cache is not None else ImageCache.default()
    qprints, _, _ = fingerprint_files([s.path for s, _ in queries], cache, max_pixels=max_pixels)
    cache.save()
    valid = np.array([p is not None for p in qprints], bool)
    found = near_pairs(hash_matrix(qprints), hash_matrix(seen), NEAR_DISTANCE, same=False, valid_queries=valid)
    root, pairs = Path(str(record.get("root", ""))), []
    for (i, j), distance in found.items():
        (sample, split), mine, theirs = queries[i], qprints[i], seen[j]
        assert mine is not None
        exact, confirmed = mine.sha256 == theirs.sha256, True
        if not exact:
            original = root / entries[j]["path"]
            difference = confirmed_difference((sample.path, mine), (original, theirs), cache, max_pixels) \
                if original.is_file() and file_sha256(original) == theirs.sha256 else None
            if difference is not None and difference > MAX_PIXEL_DIFFERENCE:
                continue
            confirmed = difference is not None
        pairs.append({"path": sample.path, "split": split, "pretraining_path": entries[j]["path"],
                      "distance": 0 if exact else distance, "exact": exact, "confirmed": confirmed})
    cache.save()
    return sorted(pairs, key=lambda p: (p["distance"], str(p["path"]), p["pretraining_path"]))


def _describe(pair: dict[str, Any], root: Path) -> str:
    path = Path(pair["path"]).resolve()
    shown = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    kind = "identical file" if pair["exact"] else f"near copy, {pair['distance']} bits" + (
        "" if pair["confirmed"] else ", hash only: the pretraining image is not here to compare")
    return f"{shown} = pretraining {pair['pretraining_path']} ({kind})"


def pretraining_leakage_check(data: LabeledData, backbone: str | Path, card: dict[str, Any], *, allow: bool,
                              max_pixels: int = DEFAULT_MAX_PIXELS, echo: Callable[[str], None] = print
                              ) -> dict[str, Any]:
    """`train --weights BACKBONE`'s check: refuse (:class:`LeakageError`) when validation or test images are
    images the backbone was pretrained on, unless ``allow``; the record goes into config.json and the model card."""
    if allow and not images_path(backbone).is_file():
        echo(f"warning: {images_path(backbone)} is missing: the fine-tuning set is not checked against the "
             "backbone's pretraining images (--allow-leakage)")
        return not_checked(f"{images_path(backbone).name} missing; --allow-leakage")
    record = read_images(backbone, card)
    pairs = seen_pairs(data, record, max_pixels=max_pixels)
    root = data.root.resolve()
    shown = [_describe(p, root) for p in pairs[:SHOWN_PAIRS]]
    result = {"checked": True, "backbone_sha256": card.get("sha256"), "pretraining_images": len(record["images"]),
              "pairs": len(pairs), "allowed": bool(allow and pairs),
              "by_split": {s: sum(p["split"] == s for p in pairs) for s in ("val", "test")},
              "unconfirmed": sum(not p["confirmed"] for p in pairs), "examples": shown}
    echo(f"pretraining leakage check: {len(pairs)} of the validation/test images are among the backbone's "
         f"{len(record['images'])} pretraining images")
    if not pairs:
        return result
    listing = pair_listing(shown, len(pairs))
    if not allow:
        raise LeakageError(f"{len(pairs)} validation/test image(s) are images the backbone {Path(backbone).name} was "
                           f"pretrained on (leakage): {listing}. Remove or exclude them (--exclude-list), or pass "
                           "--allow-leakage to train anyway (recorded in the run and its model card)")
    echo(f"warning: fine-tuning despite pretraining leakage (--allow-leakage): {len(pairs)} image(s): {listing}")
    return result


def not_checked(reason: str) -> dict[str, Any]:
    """The record when a weights file has no card (its pretraining images are unknown)."""
    return {"checked": False, "reason": reason}


def backbone_card_lines(backbone: dict[str, Any] | None, check: dict[str, Any] | None) -> list[str]:
    """The model card's lines for a run fine-tuned from a backbone file (config.json ``backbone`` and
    ``leakage_check.pretraining``); none for ImageNet or random init."""
    if not backbone:
        return []
    card = backbone.get("card") or {}
    if card:
        data = card.get("data") or {}
        auc = card.get("validation", {}).get("macro_auc")
        made = (f"pretrained on `{data.get('path', '?')}` ({len(card.get('classes', []))} classes, "
                f"{card.get('image_size', '?')} px, {card.get('epochs_run', '?')} epochs"
                + (f", validation macro AUC {auc:.3f}" if isinstance(auc, float) else "") + f"); data licence: "
                f"{card.get('licence', 'unknown')}")
    else:
        made = "no card beside the file: what it was trained on is not recorded"
    lines = [f"- **Backbone:** `{backbone.get('path')}` (SHA-256 `{str(backbone.get('sha256'))[:16]}…`), {made}; "
             f"fine-tuned with the `{backbone.get('fine_tune', '?')}` recipe"]
    if not check or not check.get("checked"):
        lines.append("- **Pretraining leakage check:** not done"
                     + (f" ({check['reason']})" if check and check.get("reason") else ""))
    elif not check.get("pairs"):
        lines.append(f"- **Pretraining leakage check:** no validation or test image is among the backbone's "
                     f"{check.get('pretraining_images')} pretraining images")
    else:
        lines.append(f"- **Pretraining leakage check:** {check['pairs']} validation/test image(s) were pretraining "
                     f"images and the model was fine-tuned anyway (`--allow-leakage`); numbers measured on them "
                     f"are optimistic. {'; '.join(check.get('examples') or [])}")
    return lines


def backbone_record(weights: str, fine_tune: str) -> dict[str, Any] | None:
    """config.json's ``backbone``: the weights file a run started from, its SHA-256 and card (None for
    ``imagenet`` and ``none``)."""
    if weights in ("imagenet", "none"):
        return None
    return {"path": str(Path(weights).resolve()), "sha256": file_sha256(weights), "card": read_card(weights),
            "fine_tune": fine_tune}
