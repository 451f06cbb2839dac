"""Dynamic batching: concurrent requests share one forward pass, run off the event loop.

A model's cost per image drops with batch size (and on a GPU by a lot), and every forward
has a fixed overhead, so the server gathers images that arrive close together into one
batch. The rules follow Triton's dynamic batcher:

- a batch is formed only when a model instance (a worker thread) is free, so while the
  model is busy requests pile up and the next batch is large without any waiting;
- once the oldest waiting image has waited ``max_wait`` seconds, the batch goes with what
  it has, so a lone request never waits longer than that;
- admission is bounded: ``admit(n)`` reserves ``n`` places before any decoding is done and
  raises ``QueueFull`` (the HTTP layer answers 503 with Retry-After) instead of letting
  memory and latency grow without limit.

The batcher knows nothing about HTTP or images: it maps input arrays (whatever the engine
takes: float32 NCHW, or uint8 images for graphs that preprocess) to output rows.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Called after each forward pass with (batch size, forward seconds, queue waits in seconds).
BatchObserver = Callable[[int, float, list[float]], None]


class QueueFull(Exception):
    """No room for more images now; ``retry_after`` is a whole-second estimate of when."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Outcome:
    """One image's output row and how it was served."""

    output: np.ndarray
    batch_size: int
    queue_seconds: float
    inference_seconds: float


@dataclass
class _Item:
    array: np.ndarray
    future: asyncio.Future[Outcome]
    enqueued: float


class Ticket:
    """Places reserved by ``admit``; each ``submit`` uses one.

    Use it as a context manager: places not submitted (an image failed to decode) are
    given back on exit.
    """

    def __init__(self, batcher: DynamicBatcher, places: int) -> None:
        self._batcher = batcher
        self.unused = places

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._batcher._admitted -= self.unused
        self.unused = 0

    async def submit(self, array: np.ndarray) -> Outcome:
        if self.unused <= 0:
            raise RuntimeError("more images submitted than admitted")
        self.unused -= 1
        return await self._batcher._enqueue(array)


class DynamicBatcher:
    """``await batcher.run(array)`` -> ``Outcome``; ``forward`` sees stacked batches (or, for a
    engine with its own ``collate``, what that makes: raw images of several sizes stay a list)."""

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        *,
        max_batch: int = 16,
        max_wait: float = 0.005,
        instances: int = 1,
        queue_size: int = 128,
        observer: BatchObserver | None = None,
    ) -> None:
        if max_batch < 1 or instances < 1 or queue_size < 1 or max_wait < 0:
            raise ValueError("max_batch, instances and queue_size must be >= 1 and max_wait >= 0")
        self.forward = forward
        self._collate: Callable[[list[np.ndarray]], Any] = getattr(forward, "collate", np.stack)
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.instances = instances
        self.queue_size = queue_size
        self._observer = observer
        self._items: deque[_Item] = deque()
        self._admitted = 0  # places reserved and not yet taken into a batch
        self._seconds_per_image = 0.0  # moving average, for Retry-After
        self._executor: ThreadPoolExecutor | None = None
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._arrived: asyncio.Event | None = None
        self._free: asyncio.Semaphore | None = None
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start collecting; must be called from the event loop that will submit."""
        self._arrived = asyncio.Event()
        self._free = asyncio.Semaphore(self.instances)
        self._executor = ThreadPoolExecutor(self.instances, thread_name_prefix="effnet-infer")
        self._closing = False
        self._collector = asyncio.get_running_loop().create_task(self._collect(), name="effnet-batcher")

    async def warm_up(self, batch: np.ndarray) -> None:
        """Run ``batch`` once on every instance's thread, outside the metrics: first passes
        allocate memory and pick kernels, and no client should wait for that."""
        assert self._executor is not None, "start() first"
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, self.forward, batch) for _ in range(self.instances)))

    async def close(self) -> None:
        """Refuse new work, finish everything already admitted, then stop the threads."""
        self._closing = True
        while self._admitted or self._items or self._running:
            await asyncio.sleep(0.01)
        if self._collector is not None:
            self._collector.cancel()
            await asyncio.gather(self._collector, return_exceptions=True)
            self._collector = None
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def running(self) -> bool:
        return self._collector is not None and not self._closing

    @property
    def depth(self) -> int:
        """Images admitted and not yet in a forward pass (being decoded, or queued)."""
        return self._admitted

    # -- admission ------------------------------------------------------------------------
    def retry_after(self) -> int:
        """Seconds until the current backlog has likely drained (at least 1)."""
        backlog = self._admitted * self._seconds_per_image / self.instances
        return max(1, min(60, math.ceil(backlog)))

    def admit(self, places: int) -> Ticket:
        """Reserve ``places`` images in the queue, or raise ``QueueFull`` at once."""
        if self._closing or self._collector is None:
            raise QueueFull("the server is not accepting work (starting or shutting down)", 1)
        if self._admitted + places > self.queue_size:
            raise QueueFull(
                f"queue full ({self._admitted} of {self.queue_size} images waiting); retry later",
                self.retry_after(),
            )
        self._admitted += places
        return Ticket(self, places)

    async def run(self, array: np.ndarray) -> Outcome:
        """Admit and submit one array (for callers that need no early admission)."""
        with self.admit(1) as ticket:
            return await ticket.submit(array)

    # -- internals ------------------------------------------------------------------------
    async def _enqueue(self, array: np.ndarray) -> Outcome:
        assert self._arrived is not None
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._items.append(_Item(array, future, time.monotonic()))
        self._arrived.set()
        return await future

    def _drop_cancelled(self) -> None:
        """Requests whose client went away need no forward pass."""
        while self._items and self._items[0].future.done():
            self._items.popleft()
            self._admitted -= 1

    async def _collect(self) -> None:
        assert self._arrived is not None and self._free is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._free.acquire()
            self._drop_cancelled()
            while not self._items:
                self._arrived.clear()
                await self._arrived.wait()
                self._drop_cancelled()
            deadline = self._items[0].enqueued + self.max_wait
            while len(self._items) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            popped = [self._items.popleft() for _ in range(min(self.max_batch, len(self._items)))]
            self._admitted -= len(popped)
            batch = [item for item in popped if not item.future.done()]
            if not batch:
                self._free.release()
                continue
            task = loop.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Item]) -> None:
        assert self._free is not None
        started = time.monotonic()
        waits = [started - item.enqueued for item in batch]
        arrays = [item.array for item in batch]
        try:
            outputs = await asyncio.get_running_loop().run_in_executor(self._executor, self._forward_stacked, arrays)
        except Exception as error:  # the model failed: every waiting request learns why
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            self._free.release()
        seconds = time.monotonic() - started
        self._seconds_per_image = 0.8 * self._seconds_per_image + 0.2 * seconds / len(batch)
        if self._observer is not None:
            self._observer(len(batch), seconds, waits)
        for item, output, wait in zip(batch, outputs, waits):
            if not item.future.done():
                item.future.set_result(Outcome(output, len(batch), wait, seconds))

    def _forward_stacked(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Runs in a worker thread: stacking 16 images is a 10 MB copy, kept off the loop too."""
        outputs = self.forward(self._collate(arrays))
        if len(outputs) != len(arrays):
            raise RuntimeError(f"the engine returned {len(outputs)} rows for a batch of {len(arrays)}")
        return outputs
