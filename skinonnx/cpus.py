"""CPU facts: how many CPUs this process may use (affinity, SMT, cgroup quota), instruction-set flags,
and the OpenMP wait policy set before torch loads. A leaf: no skinonnx imports, no torch."""

from __future__ import annotations

import math
import os
from collections.abc import MutableMapping
from pathlib import Path


def physical_cores() -> int:
    """Physical cores this process may use: ORT's intra-op pool (and the decode pool) are sized to it.

    Counts the CPUs in the affinity mask once per (package, core) pair, so SMT siblings do not
    double the thread count (two threads on one core slow convolutions down), and caps the
    result by a cgroup CPU quota (containers often see every host CPU but may use only a few).
    """
    cpus = _allowed_cpus()
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:  # no sysfs topology (not Linux, or hidden): count logical CPUs
            cores.add(("cpu", str(cpu)))
    count = len(cores) or len(cpus)
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def usable_cpus() -> int:
    """Logical CPUs this process may run on (affinity-aware; os.cpu_count() is the whole host's)."""
    return max(1, len(_allowed_cpus()))


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def _cgroup_cpu_quota() -> float | None:
    """CPUs granted by a cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``) quota; None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


# Flags (as /proc/cpuinfo spells them) of hardware bf16 arithmetic: AVX512-BF16 dot products and AMX tiles.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (default: /proc/cpuinfo; empty if unreadable)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def bf16_hardware(flags: frozenset[str] | set[str]) -> str | None:
    """Which bf16 unit the flags name ('amx_bf16', 'avx512_bf16'), or None: bf16 is then emulated (slow)."""
    return next((flag for flag in BF16_FLAGS if flag in flags), None)


OPENMP_WAIT_ENV = "OMP_WAIT_POLICY"


def passive_openmp_wait(environ: MutableMapping[str, str] | None = None) -> str:
    """Make OpenMP threads sleep instead of spin while they wait (unless the user chose a policy).

    Why: PyTorch's OpenMP threads spin at every barrier by default. When another process holds a
    core, a spinning thread burns the time slice the thread it waits for needs, and a training
    step becomes 2-8x slower (benchmarks/contention.py). libgomp reads the variable when torch
    loads, so this must run before ``import torch``; it is inherited by every child process.
    Returns the policy in force.
    """
    environ = os.environ if environ is None else environ
    return environ.setdefault(OPENMP_WAIT_ENV, "PASSIVE")
