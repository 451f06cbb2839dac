"""Back-pressure, authentication and graceful shutdown, on live servers.

A gated engine holds forward passes until the test opens it, so "the model is busy" and
"requests are in flight" are states the test sets up, not races it hopes to win.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading

import httpx
import pytest

from effnet.runtime.predictor import Predictor

from .live import gated, serve, wait_until


def depth(live) -> int:
    return live.app.state.services["efficientnet_lite0"].batcher.depth


def test_full_queue_answers_503_with_retry_after(lite0: Predictor, photo_files: dict[str, bytes]) -> None:
    predictor, engine = gated(lite0)
    data = photo_files["coffee.jpg"]

    async def scenario(live) -> tuple[list[httpx.Response], httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=60) as client:
            engine.gate.clear()
            engine.entered.clear()
            busy = asyncio.ensure_future(client.post("/v1/predict", content=data))
            await asyncio.to_thread(engine.entered.wait, 30)  # the only worker is now held
            queued = [asyncio.ensure_future(client.post("/v1/predict", content=data)) for _ in range(2)]
            await asyncio.to_thread(wait_until, lambda: depth(live) == 2)
            refused = await client.post("/v1/predict", content=data)
            engine.gate.set()
            return list(await asyncio.gather(busy, *queued)), refused

    with serve(predictor, max_batch=1, workers=1, queue_size=2, max_images=1) as live:
        answered, refused = asyncio.run(scenario(live))
        metrics = httpx.get(f"{live.url}/metrics").text
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1
    assert [r.status_code for r in answered] == [200, 200, 200]  # the admitted ones are all served
    assert 'effnet_http_errors_total{code="queue_full"} 1.0' in metrics


def test_api_key(lite0: Predictor, photo_files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real_compare = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append((given, expected))
        return real_compare(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the constant-time comparison must decide
    data = photo_files["coffee.jpg"]
    with serve(lite0, api_key="s3cret-key") as live:
        post = lambda **headers: httpx.post(f"{live.url}/v1/predict", content=data, headers=headers, timeout=60)
        missing = post()
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        assert post(**{"X-API-Key": "s3cret-kez"}).status_code == 401
        assert post(Authorization="Bearer wrong").status_code == 401
        assert post(**{"X-API-Key": "s3cret-key"}).status_code == 200
        assert post(Authorization="Bearer s3cret-key").status_code == 200
        assert httpx.get(f"{live.url}/v1/models").status_code == 401
        assert httpx.get(f"{live.url}/metrics").status_code == 401
        assert httpx.get(f"{live.url}/metrics", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        # probes and the page stay open: the page asks for the key itself
        for path in ("/healthz", "/readyz", "/", "/static/app.js"):
            assert httpx.get(f"{live.url}{path}").status_code == 200, path
        schemes = httpx.get(f"{live.url}/openapi.json").json()["components"]["securitySchemes"]
        assert {"APIKeyHeader", "HTTPBearer"} <= set(schemes)
    assert (b"s3cret-kez", b"s3cret-key") in compared and (b"wrong", b"s3cret-key") in compared


def test_shutdown_finishes_in_flight_requests(lite0: Predictor, photo_files: dict[str, bytes]) -> None:
    predictor, engine = gated(lite0)
    names = ["chelsea.jpg", "coffee.jpg", "camera.jpg"]
    live = serve(predictor, max_batch=1, workers=1).start()
    port = int(live.url.rsplit(":", 1)[1])
    results: dict[str, httpx.Response] = {}

    def ask(name: str) -> None:
        results[name] = httpx.post(f"{live.url}/v1/predict", content=photo_files[name], timeout=60)

    engine.gate.clear()
    engine.entered.clear()
    clients = [threading.Thread(target=ask, args=(name,)) for name in names]
    for client in clients:
        client.start()
    wait_until(lambda: engine.entered.is_set() and depth(live) == 2)  # one running, two queued
    stopper = threading.Thread(target=live.stop)
    stopper.start()  # what SIGTERM does: should_exit

    def refuses_connections() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) != 0

    wait_until(refuses_connections)  # no new work is accepted...
    assert stopper.is_alive()  # ...but the server waits for the in-flight requests
    engine.gate.set()
    for client in clients:
        client.join(60)
    stopper.join(60)
    assert {name: r.status_code for name, r in results.items()} == dict.fromkeys(names, 200)
    assert results["coffee.jpg"].json()["results"][0]["predictions"][0]["label"] == "espresso"


@pytest.mark.parametrize("settings, message", [
    ({"max_batch": 0}, "--max-batch"),
    ({"max_wait_ms": -1}, "--max-wait-ms"),
    ({"queue_size": 4, "max_images": 8}, "--max-images"),
    ({"api_key": ""}, "--api-key"),
])
def test_bad_settings_are_usage_errors(settings: dict, message: str) -> None:
    from effnet.errors import UsageError
    from effnet.serve.app import ServeSettings

    with pytest.raises(UsageError, match=message):
        ServeSettings(**settings)
