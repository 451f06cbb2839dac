"""Live servers for the tests, and how their answers are checked.

Servers run under uvicorn in a thread on 127.0.0.1 with an ephemeral port, so the tests go
through real sockets, HTTP parsing and the app's lifespan, as clients do. Expected answers
come from ``Predictor`` on the same bytes (the reference path of ``effnet predict``).
"""

from __future__ import annotations

import copy
import io
import logging
import socket
import threading
import time
from typing import Any

import httpx
import numpy as np
import uvicorn
from PIL import Image

from effnet.runtime.predictor import Predictor, top_k
from effnet.serve.app import ServeSettings, create_app
from effnet.serve.server import server_config


def encode(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


#: Where the app, uvicorn and the multipart parser report problems.
SERVER_LOGGERS = ("effnet.serve", "uvicorn.error", "python_multipart")


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class LiveServer:
    """uvicorn serving ``app`` in a thread, configured as ``effnet serve`` configures it;
    ``stop()`` is the SIGTERM path (should_exit). ``records`` collects what the server logs."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(server_config(app, **{"log_level": "warning", **config}))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.records: list[logging.LogRecord] = []
        self._handler = _ListHandler(self.records)

    def tracebacks(self) -> list[logging.LogRecord]:
        """Log records that carry a traceback."""
        return [record for record in self.records if record.exc_info]

    def lines(self, level: int = logging.INFO) -> list[str]:
        """The messages the server logged at ``level``."""
        return [record.getMessage() for record in self.records if record.levelno == level]

    def start(self) -> "LiveServer":
        for name in SERVER_LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
        for name in SERVER_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        assert not self.thread.is_alive(), "server did not shut down"

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(predictor: Predictor | dict[str, Predictor], shutdown_timeout: float = 30.0, log_level: str = "warning",
          **settings: Any) -> LiveServer:
    return LiveServer(create_app(predictor, ServeSettings(**settings)), shutdown_timeout=shutdown_timeout,
                      log_level=log_level)


class GatedEngine:
    """An engine whose forward passes wait for the test to open the gate, and raise
    ``failure`` when the test sets one."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.failure: Exception | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        if self.failure is not None:
            raise self.failure
        return self.inner(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def gated(predictor: Predictor) -> tuple[Predictor, GatedEngine]:
    clone = copy.copy(predictor)
    clone.engine = GatedEngine(predictor.engine)  # type: ignore[assignment]
    return clone, clone.engine  # type: ignore[return-value]


def wait_until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def expected(predictor: Predictor, data: bytes, k: int = 5) -> list[tuple[int, float]]:
    (predictions,) = top_k(predictor.logits([data]), predictor.engine.labels, k)
    return [(p.index, p.probability) for p in predictions]


def answered(result: dict) -> list[tuple[int, float]]:
    return [(p["index"], p["probability"]) for p in result["predictions"]]


def assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """Same classes in the same order; probabilities equal up to float32 batch-size noise."""
    assert [i for i, _ in got] == [i for i, _ in want]
    np.testing.assert_allclose([p for _, p in got], [p for _, p in want], atol=1e-5)


def error_of(response: httpx.Response) -> dict:
    """The JSON error of a refused request, checked for shape."""
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == response.status_code and error["message"]
    return error
