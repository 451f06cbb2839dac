"""Fixtures for the server tests: Lite0 with its real weights, real photos, a live server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from effnet.runtime.predictor import Predictor

from .live import LiveServer, encode, serve


@pytest.fixture(scope="session")
def lite0() -> Predictor:
    """What `effnet serve` runs by default: engine auto (onnxruntime on the cached export)."""
    return Predictor("efficientnet_lite0")


@pytest.fixture(scope="session")
def photo_files(acceptance_photos: dict[str, np.ndarray]) -> dict[str, bytes]:
    """Encoded photos with distinct answers (a mixed-up reply shows), in JPEG and PNG."""
    files = {f"{name}.jpg": encode(array) for name, array in acceptance_photos.items()}
    files["coffee.png"] = encode(acceptance_photos["coffee"], "PNG")
    return files


@pytest.fixture(scope="module")
def server(lite0: Predictor) -> Iterator[LiveServer]:
    """Default settings except small limits that the 4xx tests reach cheaply."""
    with serve(lite0, max_body_bytes=2 * 2**20, max_pixels=4_000_000, max_images=8, queue_size=64) as live:
        yield live
