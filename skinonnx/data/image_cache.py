"""A small on-disk cache of per-image results (perceptual hashes, quality scores), keyed by the file's SHA-256.

Shared by `audit` and `train`'s leakage check, so the second look at a data set decodes nothing. A file is
re-hashed only when its size or modification time changed (``files`` maps path -> size, mtime, SHA-256);
results are stored per content digest, so a copied or renamed file is a hit too. One JSON file, written
atomically and merged with what another process wrote meanwhile. A cache never refuses work: an unreadable
or foreign file starts an empty cache, an unwritable folder is reported by :attr:`ImageCache.note`.

Location: ``$SKINONNX_CACHE_DIR``, else ``$XDG_CACHE_HOME/skinonnx``, else ``~/.cache/skinonnx``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..atomic import write_text
from ..errors import OutputWriteError

CACHE_ENV = "SKINONNX_CACHE_DIR"
CACHE_FILE = "image-cache.json"
FORMAT = "skinonnx-image-cache"
VERSION = 1


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skinonnx"


class ImageCache:
    """``path`` None: in memory only (nothing read or written)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.files: dict[str, list] = {}
        self.images: dict[str, dict[str, Any]] = {}
        self.hits = self.misses = 0
        self.note = ""
        self._new_files: dict[str, list] = {}
        self._new_images: dict[str, dict[str, Any]] = {}
        if path is not None:
            self.files, self.images = _read(path)

    @classmethod
    def default(cls) -> ImageCache:
        return cls(default_cache_dir() / CACHE_FILE)

    def sha256(self, path: Path, compute: Callable[[Path], str]) -> str:
        """The file's digest; recomputed only when its size or modification time changed."""
        key = str(Path(path).resolve())
        st = os.stat(path)
        known = self.files.get(key)
        if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
            return str(known[2])
        digest = compute(path)
        self.files[key] = self._new_files[key] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def get(self, digest: str, key: str) -> Any:
        value = self.images.get(digest, {}).get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    def put(self, digest: str, key: str, value: Any) -> None:
        self.images.setdefault(digest, {})[key] = value
        self._new_images.setdefault(digest, {})[key] = value

    def save(self) -> None:
        """Merge what this process learnt into the file (re-read first: another process may have written)."""
        if self.path is None or not (self._new_files or self._new_images):
            return
        files, images = _read(self.path)
        files.update(self._new_files)
        for digest, records in self._new_images.items():
            images.setdefault(digest, {}).update(records)
        try:
            write_text(self.path, json.dumps({"format": FORMAT, "version": VERSION, "files": files, "images": images},
                                             separators=(",", ":")))
        except OutputWriteError as exc:
            self.note = f"image cache not saved ({exc.message}); the next run hashes again"
            return
        self._new_files, self._new_images = {}, {}


def _read(path: Path) -> tuple[dict[str, list], dict[str, dict[str, Any]]]:
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") != VERSION:
        return {}, {}
    files, images = doc.get("files"), doc.get("images")
    if not isinstance(files, dict) or not isinstance(images, dict):
        return {}, {}
    files = {k: v for k, v in files.items() if isinstance(v, list) and len(v) == 3}
    images = {k: v for k, v in images.items() if isinstance(v, dict)}
    return files, images
