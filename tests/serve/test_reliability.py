"""Back-pressure, authentication, graceful shutdown, and clients that leave, stall or send
too much, on live servers.

A gated engine holds forward passes until the test opens it, so "the model is busy" and
"requests are in flight" are states the test sets up, not races it hopes to win.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import io
import json
import re
import socket
import threading

import httpx
import numpy as np
import pytest
from PIL import Image

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

    with serve(predictor, max_batch=1, instances=1, queue_size=2, max_images=1) as live:
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
    live = serve(predictor, max_batch=1, instances=1).start()
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
    ({"instances": 0}, "--instances"),
    ({"max_wait_ms": -1}, "--max-wait-ms"),
    ({"queue_size": 4, "max_images": 8}, "--max-images (8) cannot exceed --queue-size (4)"),
    ({"api_key": ""}, "--api-key"),
    ({"max_request_pixels": 0}, "--max-request-pixels"),
    ({"read_timeout": 0}, "--read-timeout"),
])
def test_bad_settings_are_usage_errors(settings: dict, message: str) -> None:
    from effnet.errors import UsageError
    from effnet.serve.app import ServeSettings

    with pytest.raises(UsageError, match=re.escape(message)):
        ServeSettings(**settings)


def test_the_images_per_request_follow_a_smaller_queue() -> None:
    """--queue-size 8 alone is a valid server: a request may then carry at most 8 images."""
    from effnet.serve.app import ServeSettings

    assert ServeSettings(queue_size=8).max_images == 8
    assert ServeSettings().max_images == 32
    assert ServeSettings(max_pixels=1000).max_request_pixels == 5000


# -- clients that go away, stall or overload ----------------------------------------------
def metric_lines(live, prefix: str) -> list[str]:
    return [line for line in httpx.get(f"{live.url}/metrics").text.splitlines() if line.startswith(prefix)]


def raw_request(live, head: str, body: bytes = b"") -> socket.socket:
    """A connection that has sent ``head`` (request line and headers, no blank line) and ``body``."""
    connection = socket.create_connection(("127.0.0.1", live.port))
    connection.sendall(head.encode() + b"\r\n\r\n" + body)
    return connection


def read_reply(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the one reply on ``connection``; the server closes it."""
    connection.settimeout(30)
    data = b""
    while chunk := connection.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), {k.lower(): v for k, v in headers.items()}, body


def test_a_client_that_drops_mid_upload_is_not_a_server_error(lite0: Predictor,
                                                              photo_files: dict[str, bytes]) -> None:
    """nginx's 499: counted as a disconnect, no 500, no traceback in the log: one line each."""
    data = photo_files["coffee.jpg"]
    with serve(lite0, log_level="info") as live:
        for _ in range(2):
            head = f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}"
            raw_request(live, head, data[: len(data) // 2]).close()
        posts = lambda: metric_lines(live, 'effnet_http_requests_total{method="POST"')  # noqa: E731
        wait_until(lambda: sum(float(line.split()[-1]) for line in posts()) == 2)  # both requests are over
        requests = posts()
        errors = metric_lines(live, "effnet_http_errors_total")
    assert requests == ['effnet_http_requests_total{method="POST",route="/v1/predict",status="499"} 2.0']
    assert errors == ['effnet_http_errors_total{code="client_disconnected"} 2.0']
    assert live.tracebacks() == []
    left = [line for line in live.lines() if "POST /v1/predict: 499 " in line]
    assert len(left) == 2 and all(line.startswith("127.0.0.1:") and "\n" not in line for line in left), live.lines()


def test_a_request_of_many_images_does_not_hold_up_a_small_one(lite0: Predictor,
                                                                photo_files: dict[str, bytes]) -> None:
    """Decoding takes turns between requests: while a 12-image request decodes, a 1-image
    request that arrives gets a decode thread after at most one image per thread (here
    each decode of the big request is held until the test lets it go)."""
    big, small = photo_files["china.jpg"], photo_files["coffee.jpg"]
    threads = 2
    released = threading.Semaphore(0)
    big_started: list[int] = []
    small_started = threading.Event()
    predictor = copy.copy(lite0)

    def preprocess(data: bytes) -> np.ndarray:
        if data == big:
            big_started.append(1)
            assert released.acquire(timeout=60), "test never released the decode"
        else:
            small_started.set()
        return lite0.preprocess(data)

    predictor.preprocess = preprocess  # type: ignore[method-assign]

    async def scenario(live) -> tuple[int, httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=live.url, timeout=120) as client:
            files = [("f", (f"big{i}.jpg", big)) for i in range(12)]
            large = asyncio.ensure_future(client.post("/v1/predict", files=files))
            await asyncio.to_thread(wait_until, lambda: len(big_started) == threads)  # every thread is busy
            little = asyncio.ensure_future(client.post("/v1/predict", content=small))
            await asyncio.to_thread(wait_until, lambda: depth(live) == 13)  # both admitted, decoding
            let_go = 0
            while not small_started.is_set():
                assert let_go < 12, "the small request never got a decode thread"
                released.release()
                let_go += 1
                # the freed thread takes the next job: the big request's or the small one's
                await asyncio.to_thread(wait_until, lambda: small_started.is_set() or
                                        len(big_started) == threads + let_go)
            little_reply = await little
            assert not large.done()  # the big one is still decoding: the small one went first
            for _ in range(12):
                released.release()
            return let_go, little_reply, await large

    with serve(predictor, preprocess_threads=threads, max_images=12) as live:
        let_go, little, large = asyncio.run(scenario(live))
    assert let_go <= threads
    assert little.status_code == 200 and large.status_code == 200
    assert [r["filename"] for r in large.json()["results"]] == [f"big{i}.jpg" for i in range(12)]
    assert little.json()["results"][0]["predictions"][0]["label"] == "espresso"


def test_a_request_over_the_pixel_budget_is_refused(lite0: Predictor) -> None:
    """--max-request-pixels bounds the decoding one request can cause (here 3 x 4 MP > 10 MP)."""
    black = io.BytesIO()
    Image.new("RGB", (2000, 2000)).save(black, format="PNG")  # 4 MP, a few kB on the wire
    png = black.getvalue()
    with serve(lite0, max_pixels=4_000_000, max_request_pixels=10_000_000) as live:
        two = httpx.post(f"{live.url}/v1/predict", files=[("f", (f"{i}.png", png)) for i in range(2)], timeout=60)
        three = httpx.post(f"{live.url}/v1/predict", files=[("f", (f"{i}.png", png)) for i in range(3)], timeout=60)
    assert two.status_code == 200 and len(two.json()["results"]) == 2
    assert three.status_code == 413
    error = three.json()["error"]
    assert error["code"] == "too_many_pixels_in_request"
    assert "10,000,000" in error["message"] and "--max-request-pixels" in error["message"]


def test_a_request_still_running_when_the_shutdown_timeout_ends_gets_a_json_503(
        lite0: Predictor, photo_files: dict[str, bytes]) -> None:
    predictor, engine = gated(lite0)
    live = serve(predictor, shutdown_timeout=0.2).start()
    replies: list[httpx.Response] = []
    engine.gate.clear()
    engine.entered.clear()
    client = threading.Thread(target=lambda: replies.append(
        httpx.post(f"{live.url}/v1/predict", content=photo_files["coffee.jpg"], timeout=60)))
    client.start()
    engine.entered.wait(30)
    stopper = threading.Thread(target=live.stop)
    stopper.start()
    client.join(60)
    engine.gate.set()  # the forward pass ends; the server finishes stopping
    stopper.join(60)
    (reply,) = replies
    assert reply.status_code == 503 and reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == "shutting_down"
    assert live.tracebacks() == []


def test_a_body_that_does_not_arrive_in_time_is_a_408(lite0: Predictor) -> None:
    with serve(lite0, read_timeout=0.5, log_level="info") as live:
        stalled = raw_request(live, "POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                                    "Content-Length: 5000", b"\xff\xd8" + bytes(100))
        status, headers, body = read_reply(stalled)
        port = stalled.getsockname()[1]
        stalled.close()
        errors = metric_lines(live, "effnet_http_errors_total")
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "body_timeout"
    assert errors == ['effnet_http_errors_total{code="body_timeout"} 1.0']
    assert [line for line in live.lines() if "408" in line] == [
        f"127.0.0.1:{port}: POST /v1/predict: 408 the request body did not arrive within 0.5 "
        "seconds (--read-timeout)"]


@pytest.mark.parametrize("sent", ["", "POST /v1/predict HTTP/1.1\r\nHost: x"])
def test_a_request_head_that_does_not_arrive_in_time_closes_the_connection(lite0: Predictor, sent: str) -> None:
    """Slow headers (or none at all) hold a connection only for --read-timeout: one log line
    and one counted header_timeout each."""
    with serve(lite0, read_timeout=0.5, log_level="info") as live:
        connection = socket.create_connection(("127.0.0.1", live.port))
        connection.sendall(sent.encode())
        status, headers, body = read_reply(connection)  # the server closes the connection
        port = connection.getsockname()[1]
        connection.close()
        errors = metric_lines(live, "effnet_http_errors_total")
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "header_timeout"
    assert errors == ['effnet_http_errors_total{code="header_timeout"} 1.0']
    assert [line for line in live.lines() if "408" in line] == [
        f"127.0.0.1:{port}: 408 the request line and headers did not arrive within 0.5 seconds (--read-timeout)"]


def test_the_next_request_on_a_kept_alive_connection_has_the_same_deadline(lite0: Predictor) -> None:
    with serve(lite0, read_timeout=0.5) as live:
        connection = raw_request(live, "GET /healthz HTTP/1.1\r\nHost: x")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += connection.recv(65536)
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost:")  # and no more
        status, headers, body = read_reply(connection)
        connection.close()
    assert first.startswith(b"HTTP/1.1 200 ")
    assert status == 408 and json.loads(body)["error"]["code"] == "header_timeout"


def test_a_model_failure_is_a_json_500_logged_once(lite0: Predictor, photo_files: dict[str, bytes]) -> None:
    predictor, engine = gated(lite0)
    with serve(predictor) as live:
        engine.failure = RuntimeError("the model broke")  # after the warm-up
        reply = httpx.post(f"{live.url}/v1/predict", content=photo_files["coffee.jpg"], timeout=60)
    assert reply.status_code == 500 and reply.json()["error"]["code"] == "internal_error"
    (logged,) = live.tracebacks()  # once, not again by Starlette and uvicorn
    assert logged.exc_info[1] is engine.failure
