"""Atomic file writes: write a temp file in the target folder, fsync, then ``os.replace``.

A run killed at any moment leaves either the previous complete file or the new complete
file under the final name, never a half-written one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import OutputWriteError, SkinOnnxError


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``final``; on success it is fsynced and renamed onto ``final``."""
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
    except OSError as exc:
        raise _write_error(final, exc) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; results should read like any new file
        os.replace(tmp, final)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _write_error(final, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the OS allows
        dir_fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _default_mode() -> int:
    """0666 minus the process umask: what ``open(path, "w")`` would have given the file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def ensure_writable_dir(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` and prove a file can be made in it, so a long job fails at its start, not its end."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".skinonnx-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise _write_error(folder, exc) from None
    return folder


_REASONS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded", errno.EACCES: "permission denied",
            errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
            errno.EEXIST: "a file is in the way of a folder", errno.ENOTDIR: "a file is in the way of a folder"}


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    return OutputWriteError(f"cannot write {path}: {_REASONS.get(exc.errno or 0, exc.strerror or str(exc))}")


def write_with(final: str | os.PathLike[str], writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``final`` atomically."""
    with atomic_path(final) as tmp:
        writer(tmp)
    return Path(final)


def write_text(final: str | os.PathLike[str], text: str) -> Path:
    return write_with(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(final: str | os.PathLike[str], data: bytes) -> Path:
    return write_with(final, lambda tmp: tmp.write_bytes(data))


def write_json(final: str | os.PathLike[str], obj: Any) -> Path:
    return write_text(final, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def onnx_output(output: str | os.PathLike[str]) -> Path:
    """Where an export may write: a ``.onnx`` path in a writable folder (checked before any work starts)."""
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise SkinOnnxError(f"--output must end in .onnx: {output}")
    ensure_writable_dir(output.parent)
    return output
