"""DynamicBatcher on its own, with a numpy "model" whose output identifies its input.

The forward function returns each input's first value, so every answer shows which array
it was computed from: a lost, duplicated or swapped item fails the test.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from effnet.serve.batcher import DynamicBatcher, QueueFull


def first_value(batch: np.ndarray) -> np.ndarray:
    return batch.reshape(len(batch), -1)[:, :1].copy()


class Recorder:
    """A forward function that remembers its batch sizes and can be held shut."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(10), "test gate never opened"
        self.sizes.append(len(batch))
        return first_value(batch)


def item(value: float) -> np.ndarray:
    return np.full((3, 4, 4), value, np.float32)


def test_concurrent_items_are_batched_and_each_gets_its_own_answer() -> None:
    recorder = Recorder()

    async def scenario() -> list[float]:
        batcher = DynamicBatcher(recorder, max_batch=8, max_wait=0.05, queue_size=64)
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.run(item(i)) for i in range(40)))
        await batcher.close()
        assert all(1 <= o.batch_size <= 8 for o in outcomes)
        return [float(o.output[0]) for o in outcomes]

    assert asyncio.run(scenario()) == [float(i) for i in range(40)]
    assert sum(recorder.sizes) == 40 and max(recorder.sizes) == 8  # 40 at once: full batches form


def test_busy_worker_lets_the_next_batch_fill_up() -> None:
    """While the model is busy, arrivals queue; the next batch takes them without waiting."""
    recorder = Recorder()

    async def scenario() -> None:
        batcher = DynamicBatcher(recorder, max_batch=16, max_wait=0.0, queue_size=64)
        await batcher.start()
        recorder.gate.clear()
        first = asyncio.ensure_future(batcher.run(item(-1)))
        await asyncio.to_thread(recorder.entered.wait, 10)
        rest = [asyncio.ensure_future(batcher.run(item(i))) for i in range(10)]
        await asyncio.sleep(0.05)
        assert batcher.depth == 10
        recorder.gate.set()
        outcomes = await asyncio.gather(first, *rest)
        assert [float(o.output[0]) for o in outcomes] == [-1.0, *map(float, range(10))]
        await batcher.close()

    asyncio.run(scenario())
    assert recorder.sizes == [1, 10]


def test_lone_item_goes_after_max_wait() -> None:
    recorder = Recorder()

    async def scenario() -> float:
        batcher = DynamicBatcher(recorder, max_batch=16, max_wait=0.02, queue_size=4)
        await batcher.start()
        started = time.monotonic()
        outcome = await batcher.run(item(7))
        await batcher.close()
        assert outcome.batch_size == 1 and outcome.queue_seconds >= 0.02
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 5  # it is not held until a full batch arrives


def test_full_queue_refuses_at_once_and_frees_places_after() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = DynamicBatcher(recorder, max_batch=1, max_wait=0.0, queue_size=2)
        await batcher.start()
        recorder.gate.clear()
        running = asyncio.ensure_future(batcher.run(item(0)))
        await asyncio.to_thread(recorder.entered.wait, 10)
        queued = [asyncio.ensure_future(batcher.run(item(i))) for i in (1, 2)]
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull) as refused:
            batcher.admit(1)
        assert refused.value.retry_after >= 1
        with batcher.admit(0):
            pass
        recorder.gate.set()
        await asyncio.gather(running, *queued)
        assert batcher.depth == 0
        with batcher.admit(2) as ticket:  # unused places are given back on exit
            assert batcher.depth == 2
            assert ticket.unused == 2
        assert batcher.depth == 0
        await batcher.close()

    asyncio.run(scenario())


def test_a_failing_forward_reaches_every_waiter_and_the_batcher_goes_on() -> None:
    calls = {"n": 0}

    def flaky(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("device lost")
        return first_value(batch)

    async def scenario() -> None:
        batcher = DynamicBatcher(flaky, max_batch=4, max_wait=0.05, queue_size=8)
        await batcher.start()
        failed = await asyncio.gather(*(batcher.run(item(i)) for i in range(3)), return_exceptions=True)
        assert all(isinstance(error, RuntimeError) and "device lost" in str(error) for error in failed)
        assert float((await batcher.run(item(5))).output[0]) == 5.0
        assert batcher.depth == 0
        await batcher.close()

    asyncio.run(scenario())


def test_wrong_row_count_is_an_error_not_a_misrouted_answer() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(lambda batch: first_value(batch)[:1], max_batch=4, max_wait=0.05)
        await batcher.start()
        results = await asyncio.gather(*(batcher.run(item(i)) for i in range(2)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) and "rows" in str(r) for r in results)
        await batcher.close()

    asyncio.run(scenario())


def test_cancelled_requests_are_skipped() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = DynamicBatcher(recorder, max_batch=8, max_wait=0.0, queue_size=8)
        await batcher.start()
        recorder.gate.clear()
        running = asyncio.ensure_future(batcher.run(item(0)))
        await asyncio.to_thread(recorder.entered.wait, 10)
        gone = asyncio.ensure_future(batcher.run(item(1)))
        kept = asyncio.ensure_future(batcher.run(item(2)))
        await asyncio.sleep(0.01)
        gone.cancel()  # the client went away
        recorder.gate.set()
        assert float((await kept).output[0]) == 2.0
        await running
        await batcher.close()
        assert batcher.depth == 0

    asyncio.run(scenario())
    assert recorder.sizes == [1, 1]


def test_close_finishes_admitted_work_then_refuses() -> None:
    recorder = Recorder()

    async def scenario() -> None:
        batcher = DynamicBatcher(recorder, max_batch=2, max_wait=0.0, queue_size=8)
        await batcher.start()
        recorder.gate.clear()
        pending = [asyncio.ensure_future(batcher.run(item(i))) for i in range(5)]
        await asyncio.to_thread(recorder.entered.wait, 10)
        closing = asyncio.ensure_future(batcher.close())
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            batcher.admit(1)
        recorder.gate.set()
        await closing
        assert [float(p.result().output[0]) for p in pending] == [0.0, 1.0, 2.0, 3.0, 4.0]
        assert not batcher.running

    asyncio.run(scenario())


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(first_value, max_batch=0)
    with pytest.raises(ValueError):
        DynamicBatcher(first_value, max_wait=-1)


def test_instances_run_forward_passes_side_by_side() -> None:
    running, most = [0], [0]
    lock = threading.Lock()
    both_in = threading.Barrier(2, timeout=10)

    def forward(batch: np.ndarray) -> np.ndarray:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        both_in.wait()  # passes only if two forward passes are in flight together
        with lock:
            running[0] -= 1
        return first_value(batch)

    async def scenario() -> list[float]:
        batcher = DynamicBatcher(forward, max_batch=1, max_wait=0.0, instances=2, queue_size=8)
        await batcher.start()
        outcomes = await asyncio.gather(*(batcher.run(item(i)) for i in range(4)))
        await batcher.close()
        return [float(o.output[0]) for o in outcomes]

    assert asyncio.run(scenario()) == [0.0, 1.0, 2.0, 3.0]
    assert most[0] == 2
