"""Fixtures for the server tests: Lite0 with its real weights, real photos, a live server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from effnet.data.transforms import Preprocessing
from effnet.runtime.onnx_metadata import INPUT_FLOAT, write_metadata
from effnet.runtime.predictor import Predictor

from .live import LiveServer, encode, serve


@pytest.fixture(scope="session")
def lite0() -> Predictor:
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


@pytest.fixture(scope="session")
def tiny_classifier() -> Callable[..., Path]:
    """``tiny_classifier(path, layout)`` writes a hand-made ONNX classifier with effnet metadata:
    logits = the mean pixel of the (normalized, or raw uint8) image @ a fixed random matrix.

    Local until the shared fixture in tests/conftest.py lands; then use that one.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(0).normal(size=(3, 1000)).astype(np.float32)

    def write(path: Path, layout: str = INPUT_FLOAT, size: int = 32) -> Path:
        if layout == INPUT_FLOAT:
            nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
                     helper.make_node("Flatten", ["pooled"], ["flat"])]
            image = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])
        else:  # uint8 NHWC of any size, the layout of --with-preprocessing graphs
            nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
                     helper.make_node("ReduceMean", ["f", "axes"], ["flat"], keepdims=0)]
            image = helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", "H", "W", 3])
        nodes.append(helper.make_node("MatMul", ["flat", "w"], ["logits"]))
        graph = helper.make_graph(
            nodes, "tiny", [image], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
            [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
        write_metadata(model, {
            "arch": "efficientnet_lite0", "input": layout, "labels": "imagenet1k", "num_classes": 1000,
            "preprocessing": Preprocessing(size=size, mean=(0.5,) * 3, std=(0.25,) * 3).to_dict(),
        })
        onnx.save(model, path)
        return path

    return write
