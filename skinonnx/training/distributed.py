"""Data-parallel training under torchrun: process group, rank helpers, collectives the loop needs.

``torchrun --nproc_per_node N cli.py train ...`` (or ``--nnodes``/rendezvous across machines) sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` finds them
and joins the group (NCCL on CUDA, gloo on the CPU). Without them everything here is a no-op and
the loop runs as one process. Every collective has a timeout, so a rank that dies (or hangs) makes
the others fail with :class:`DistributedError` in bounded time instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import SkinOnnxError

DEFAULT_TIMEOUT_S = 600
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(SkinOnnxError):
    """Another rank died, hung or could not be reached (or the launch environment is inconsistent)."""


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> str:
        return f"rank {self.rank} of {self.world_size} ({self.backend})" if self.enabled else "one process"


_context = DistContext()


def current() -> DistContext:
    return _context


def launched_by_torchrun(env: dict[str, str] | os._Environ = os.environ) -> bool:
    return int(env.get("WORLD_SIZE", "1") or 1) > 1


def setup(device: torch.device, timeout_s: float = DEFAULT_TIMEOUT_S) -> DistContext:
    """Join the torchrun process group once (idempotent); a single-process context without torchrun.

    On CUDA each process takes GPU ``LOCAL_RANK`` and NCCL; on the CPU, gloo. ``timeout_s`` bounds every
    collective (and the rendezvous), which is how a dead or stuck peer turns into an error here.
    """
    global _context
    if _context.enabled or not launched_by_torchrun():
        return _context
    missing = [name for name in TORCHRUN_VARS if name not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} but {', '.join(missing)} "
                               "is not set; launch with torchrun")
    rank, world, local_rank = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs here; "
                                   "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:  # store/rendezvous failures (DistStoreError is a RuntimeError)
        raise DistributedError(f"rank {rank}: could not join the process group at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} within {timeout_s:.0f} s "
                               f"({_first_line(exc)})") from None
    _context = DistContext(rank, world, local_rank, backend)
    return _context


@contextlib.contextmanager
def distributed_run(device_name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[DistContext]:
    """Join the group (under torchrun), turn a lost peer into one clear error, leave the group on success."""
    from .device import resolve_device

    ctx = setup(resolve_device(device_name), timeout_s)
    try:
        yield ctx
    except Exception as exc:
        if is_peer_failure(exc):
            raise lost_peer(exc, "a training step") from None
        raise
    cleanup()


def cleanup() -> None:
    """Leave the group after a successful run (not after a failure: a dead peer can block it)."""
    global _context
    if _context.enabled and dist.is_initialized():
        dist.destroy_process_group()
    _context = DistContext()


def local_device(device: torch.device) -> torch.device:
    """This process's device: ``cuda:LOCAL_RANK`` under torchrun on GPUs."""
    if device.type == "cuda" and _context.enabled:
        return torch.device("cuda", _context.local_rank)
    return device


def per_process_batch(global_batch: int) -> int:
    """``--batch-size`` is the global batch (all processes together): each process takes its share."""
    world = _context.world_size
    if global_batch % world:
        raise SkinOnnxError(f"--batch-size {global_batch} is the global batch and must divide evenly among "
                            f"the {world} processes (e.g. {max(world, global_batch // world * world)})")
    return global_batch // world


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    """--sync-bn does something only under torchrun on CUDA: refuse it elsewhere, before any work."""
    if sync_bn and not (_context.enabled and device.type == "cuda"):
        raise SkinOnnxError("--sync-bn needs torchrun on CUDA: PyTorch's SyncBatchNorm has no CPU kernel and a "
                            "single process has no other BatchNorm statistics to sync (on the CPU use --freeze-bn)")


def wrap_model(model: nn.Module, device: torch.device, *, sync_bn: bool) -> nn.Module:
    """DistributedDataParallel around ``model`` (optionally with SyncBatchNorm); ``model`` itself when alone."""
    if not _context.enabled:
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sync_buffers(model: nn.Module) -> None:
    """Give every rank rank 0's BatchNorm running statistics (each rank updated them on its own batches)."""
    if not _context.enabled:
        return
    with _collective("buffer broadcast"):
        for buf in unwrap(model).buffers():
            dist.broadcast(buf, src=0)


def sum_values(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64)."""
    if not _context.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device if _context.backend == "nccl" else "cpu")
    with _collective("all_reduce"):
        dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, on every rank (early stop, best epoch): one truth even if float noise differed."""
    if not _context.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=device if _context.backend == "nccl" else "cpu")
    with _collective("broadcast"):
        dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (pickled between our own processes: a trusted channel)."""
    if not _context.enabled:
        return obj
    box = [obj if _context.is_main else None]
    with _collective("broadcast"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_by_index(indices: list[int], logits: np.ndarray, labels: np.ndarray, total: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Reassemble a split evaluated in shards: rows in dataset order, each index exactly once.

    ``DistributedSampler`` pads the last shard with repeats of the first indices so every rank gets
    the same count; the repeats are dropped here, so metrics see every validation image once.
    """
    if not _context.enabled:
        return logits, labels
    parts: list[object] = [None] * _context.world_size
    with _collective("all_gather"):
        dist.all_gather_object(parts, (list(indices), logits, labels))
    out_logits = np.full((total, logits.shape[1]), np.nan)
    out_labels = np.full(total, -1, dtype=np.int64)
    for idx, part_logits, part_labels in parts:  # type: ignore[misc]
        out_logits[idx] = part_logits
        out_labels[idx] = part_labels
    if (out_labels < 0).any():
        raise DistributedError(f"{int((out_labels < 0).sum())} validation images were evaluated by no rank")
    return out_logits, out_labels


def barrier() -> None:
    if _context.enabled:
        with _collective("barrier"):
            dist.barrier()


@contextlib.contextmanager
def rank0_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. writes a split file), the others after it."""
    if not _context.is_main:
        barrier()
    yield
    if _context.is_main:
        barrier()


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as exc:  # DistBackendError/DistNetworkError are RuntimeErrors
        raise lost_peer(exc, what) from None


def lost_peer(exc: BaseException, what: str = "a collective") -> DistributedError:
    return DistributedError(f"{_context.describe()}: {what} failed, another rank died, hung or became "
                            f"unreachable ({_first_line(exc)}); stopping. The last completed epoch is in "
                            "last.pt: relaunch with --resume")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether an exception raised inside DDP's backward/forward comes from the process group."""
    if not _context.enabled:
        return False
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("gloo", "Gloo", "NCCL", "Connection closed", "Connection reset",
                                      "timed out", "Timed out", "ProcessGroup"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
