"""Dynamic batching: concurrent requests are stacked into one ONNX Runtime call.

A request waits in a bounded queue; the batcher takes the oldest one, waits up to ``max_wait`` for more rows of
the same shape (up to ``max_batch`` rows in all), runs them as one batch in a worker thread and hands each
request its own rows back. Rows never mix between requests and the model sees the same pixels, so a batched
answer equals the one-by-one answer up to ONNX Runtime's float rounding across batch sizes. While one batch
runs the next one gathers, so under load batches fill without waiting at all.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .problems import RequestProblem, overloaded

Outputs = dict[str, np.ndarray]


@dataclass
class _Item:
    rows: np.ndarray
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)

    @property
    def key(self) -> tuple:
        return self.rows.dtype.str, self.rows.shape[1:]


class DynamicBatcher:
    """``await submit(rows)`` -> every output for those rows; one model call at a time, in its own thread."""

    def __init__(self, run: Callable[[np.ndarray], Outputs], *, max_batch: int, max_wait_s: float, max_queue: int,
                 on_batch: Callable[[int], None] = lambda n: None) -> None:
        self._run, self.max_batch, self.max_wait_s, self.max_queue = run, max_batch, max_wait_s, max_queue
        self._on_batch = on_batch
        self._pending: collections.deque[_Item] = collections.deque()
        self._gathering: list[_Item] = []  # the batch waiting (up to max_wait) for company
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ort-batch")

    @property
    def depth(self) -> int:
        """Requests waiting for the model: queued, or gathered into a batch that still waits for company."""
        return len(self._pending) + len(self._gathering)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="dynamic-batcher")

    async def submit(self, rows: np.ndarray) -> Outputs:
        if self._closing:
            raise RequestProblem(503, "shutting_down", "the server is shutting down", {"Retry-After": "1"})
        if len(self._pending) >= self.max_queue:
            raise overloaded()
        item = _Item(rows, asyncio.get_running_loop().create_future())
        self._pending.append(item)
        self._wake.set()
        return await item.future

    async def stop(self) -> None:
        """Refuse new work, finish everything queued (graceful shutdown), then end the loop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = await self._gather()
            self._gathering = []
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([i.rows for i in batch])
            self._on_batch(len(rows))
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, rows)
            except Exception as exc:  # RequestProblem (the input did not fit the graph) or a failure: to each
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            start = 0
            for item in batch:
                n = len(item.rows)
                if not item.future.done():  # a client that went away cancelled its future
                    item.future.set_result({k: v[start:start + n] for k, v in outputs.items()})
                start += n

    async def _gather(self) -> list[_Item]:
        """The oldest request plus the queued ones of the same shape, waiting until its deadline for more."""
        first = self._pending.popleft()
        batch, total = [first], len(first.rows)
        self._gathering = batch
        deadline = first.arrived + self.max_wait_s
        while total < self.max_batch:
            total = self._take_matching(batch, total)
            remaining = deadline - time.perf_counter()
            if total >= self.max_batch or remaining <= 0 or self._closing:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                self._take_matching(batch, total)
                break
        return [i for i in batch if not i.future.cancelled()]

    def _take_matching(self, batch: list[_Item], total: int) -> int:
        key = batch[0].key
        kept: collections.deque[_Item] = collections.deque()
        while self._pending:
            item = self._pending.popleft()
            if item.key == key and total + len(item.rows) <= self.max_batch:
                batch.append(item)
                total += len(item.rows)
            else:
                kept.append(item)
        self._pending = kept
        return total
