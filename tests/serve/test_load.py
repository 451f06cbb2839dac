"""A bounded load test on 127.0.0.1: 300 requests from 32 concurrent clients (about 20 s
of Lite0 forward passes on 2 cores).

Every request must be answered (none lost, none refused at this queue size) with exactly
the classes ``Predictor`` gives for that request's image. Five photos with different
answers rotate through the requests, so an answer routed to the wrong client shows.

Marked slow: the default suite's test_concurrent_requests_share_a_forward_pass (test_app.py)
already checks that concurrent requests share a forward pass and each gets its own answer.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from effnet.runtime.predictor import Predictor

from .live import answered, assert_same, expected, serve


async def hammer(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> list[tuple[str, httpx.Response]]:
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    replies: list[tuple[str, httpx.Response]] = []
    limits = httpx.Limits(max_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            while not queue.empty():
                name, data = queue.get_nowait()
                replies.append((name, await client.post("/v1/predict", content=data)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return replies


@pytest.mark.slow
def test_300_requests_from_32_clients_all_answered_correctly(lite0: Predictor,
                                                            photo_files: dict[str, bytes]) -> None:
    requests, concurrency = 300, 32
    want = {name: expected(lite0, data) for name, data in photo_files.items()}
    names = list(photo_files)
    bodies = [(names[i % len(names)], photo_files[names[i % len(names)]]) for i in range(requests)]
    with serve(lite0, max_batch=16, max_wait_ms=5, queue_size=256) as live:
        replies = asyncio.run(hammer(live.url, bodies, concurrency))
        metrics = httpx.get(f"{live.url}/metrics").text
    assert len(replies) == requests
    assert [r.status_code for _, r in replies] == [200] * requests
    for name, reply in replies:
        (result,) = reply.json()["results"]
        assert_same(answered(result), want[name])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    model = (("model", "efficientnet_lite0"),)
    assert samples[("effnet_images_total", model)] == requests
    assert samples[("effnet_batch_size_sum", model)] == requests
    assert samples[("effnet_batch_size_count", model)] < requests  # requests did share forward passes
    assert samples[("effnet_queue_depth", model)] == 0
