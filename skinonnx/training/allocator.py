"""Keep freed memory in the process (glibc ``mallopt``) so PyTorch on the CPU stops page-faulting.

With glibc's defaults, buffers above a (dynamic) threshold are ``mmap``ed and unmapped on every
free, and the top of the heap is trimmed back to the OS, so each forward/backward pass faults
its activations in again: 19-36 % of CPU time on the reference machine (docs/SPEED.md).
Raising the mmap and trim thresholds makes freed blocks stay in the heap for the next step.

This is done with ``mallopt`` through ctypes, inside the running process, so no environment
variable has to be exported and nothing is re-executed. It affects allocations made *after*
the call, so the CLI calls it before importing torch. Safe by construction: ``mallopt`` only
changes when glibc returns memory to the OS (RSS stays at its peak instead of shrinking), never
what a program can observe through malloc/free; forked DataLoader workers inherit the settings
with the heap; torchrun ranks and other spawned ``skinonnx`` processes run the same CLI entry
and set them again. Library code never calls this implicitly; call it yourself if you want it.

Off switch: ``SKINONNX_MALLOC=system`` (glibc's defaults). It also stays off when the user
already chose an allocator (``LD_PRELOAD`` of tcmalloc/jemalloc, or ``GLIBC_TUNABLES`` with
malloc settings), and on non-glibc systems.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

ENV_SWITCH = "SKINONNX_MALLOC"
OFF_VALUES = frozenset({"system", "off", "0", "default"})
# glibc <malloc.h> parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_BYTES = 2**31 - 1  # mallopt takes an int: the largest value it can express (2 GiB)


def _glibc():
    """The process's C library if it is glibc (mallopt exists with these parameter numbers), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        version = libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_char_p
    return libc if version() else None


def chosen_elsewhere(environ: Mapping[str, str]) -> str | None:
    """The allocator setting the user already made, if any (we then leave malloc alone)."""
    preload = environ.get("LD_PRELOAD", "")
    for name in ("tcmalloc", "jemalloc", "mimalloc"):
        if name in preload:
            return f"{name} (LD_PRELOAD)"
    if "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return "glibc malloc with the user's GLIBC_TUNABLES"
    return None


def keep_freed_memory(environ: Mapping[str, str] | None = None) -> str:
    """Apply the mallopt settings unless switched off; return one line saying what malloc does now."""
    environ = os.environ if environ is None else environ
    if environ.get(ENV_SWITCH, "").strip().lower() in OFF_VALUES:
        return f"glibc malloc defaults ({ENV_SWITCH}={environ[ENV_SWITCH]})"
    other = chosen_elsewhere(environ)
    if other:
        return other
    libc = _glibc()
    if libc is None:
        return "system malloc (not glibc; left alone)"
    ok = libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES) == 1
    if not ok:
        return "glibc malloc defaults (mallopt refused the thresholds)"
    return f"glibc malloc keeping freed memory (mmap/trim thresholds 2 GiB; {ENV_SWITCH}=system to turn off)"
