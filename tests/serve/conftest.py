"""Fixtures for the server tests: Lite0 with its real weights, real photos, live servers.

Servers run under uvicorn in a thread on 127.0.0.1 with an ephemeral port, so the tests go
through real sockets, HTTP parsing and the app's lifespan, as clients do.
"""

from __future__ import annotations

import copy
import io
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from PIL import Image

from effnet.serve.app import ServeSettings, create_app
from effnet.tasks.predict import Predictor


def encode(array: np.ndarray, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def lite0() -> Predictor:
    return Predictor("efficientnet_lite0")


@pytest.fixture(scope="session")
def photo_files(photos: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Encoded photos with distinct answers (a mixed-up reply shows), in JPEG and PNG."""
    files = {f"{name}.jpg": encode(array) for name, array in photos.items()}
    files["coffee.png"] = encode(photos["coffee"], "PNG")
    return files


class LiveServer:
    """uvicorn serving ``app`` in a thread; ``stop()`` is the SIGTERM path (should_exit)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self) -> "LiveServer":
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
        assert not self.thread.is_alive(), "server did not shut down"

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(predictor: Predictor | dict[str, Predictor], **settings: Any) -> LiveServer:
    return LiveServer(create_app(predictor, ServeSettings(**settings)))


@pytest.fixture(scope="module")
def server(lite0: Predictor) -> Iterator[LiveServer]:
    """Default settings except small limits that the 4xx tests reach cheaply."""
    with serve(lite0, max_body_bytes=2 * 2**20, max_pixels=4_000_000, max_images=8, queue_size=64) as live:
        yield live


class GatedBackend:
    """A backend whose forward passes wait for the test to open the gate."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(30), "test gate never opened"
        return self.inner(batch)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def gated(predictor: Predictor) -> tuple[Predictor, GatedBackend]:
    clone = copy.copy(predictor)
    clone.backend = GatedBackend(predictor.backend)  # type: ignore[assignment]
    return clone, clone.backend  # type: ignore[return-value]


def wait_until(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)
