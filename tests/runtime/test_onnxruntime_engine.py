"""The onnxruntime backend: self-describing files, one-line errors, and no torch at all.

The graphs here are tiny hand-made classifiers (global pool + linear) with effnet metadata,
so these tests need no export; tests/tasks/test_export.py covers real exported networks.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from effnet.cli import main
from effnet.data.images import load_image
from effnet.data.labels import imagenet_names
from effnet.data.transforms import Preprocessing
from effnet.errors import UsageError
from effnet.runtime import open_backend
from effnet.runtime.onnx_backend import (
    INPUT_BGR,
    INPUT_FLOAT,
    INPUT_RGB,
    OnnxModelError,
    encode_metadata,
    read_metadata,
)

SRC = Path(__file__).resolve().parents[2] / "src"
CAT = Path(__file__).resolve().parents[2] / "examples" / "images" / "cat.jpg"
WEIGHT = np.random.default_rng(0).normal(size=(3, 1000)).astype(np.float32)


def tiny_classifier(path: Path, layout: str = INPUT_FLOAT, metadata: bool = True, size: int = 32) -> Path:
    """logits = mean over pixels of the (normalized or raw) image @ WEIGHT."""
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
        [numpy_helper.from_array(WEIGHT, "w"), numpy_helper.from_array(np.array([1, 2], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    if metadata:
        helper.set_model_props(model, encode_metadata({
            "arch": "efficientnet_lite0", "input": layout, "labels": "imagenet1k", "num_classes": 1000,
            "preprocessing": Preprocessing(size=size, mean=(0.5,) * 3, std=(0.25,) * 3).to_dict(),
        }))
    onnx.save(model, path)
    return path


def test_metadata_round_trips(tmp_path: Path) -> None:
    backend = open_backend("onnx", None, str(tiny_classifier(tmp_path / "m.onnx")))
    assert (backend.arch, backend.input_layout, backend.num_classes) == ("efficientnet_lite0", INPUT_FLOAT, 1000)
    assert backend.preprocessing == Preprocessing(size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert backend.labels == imagenet_names()
    assert read_metadata(encode_metadata({"a": [1, 2], "b": "text"})) == {"a": [1, 2], "b": "text"}


def test_logits_are_the_graph_on_the_preprocessed_batch(tmp_path: Path) -> None:
    backend = open_backend("onnx", None, str(tiny_classifier(tmp_path / "m.onnx")))
    batch = np.stack([backend.preprocessing(load_image(CAT))] * 2)
    expected = batch.mean(axis=(2, 3)) @ WEIGHT
    np.testing.assert_allclose(backend(batch), expected, rtol=1e-4, atol=1e-4)


def test_image_graphs_take_images_of_any_size_in_order(tmp_path: Path) -> None:
    backend = open_backend("onnx", None, str(tiny_classifier(tmp_path / "m.onnx", layout=INPUT_RGB)))
    assert backend.takes_images
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((5, 7, 3), (9, 4, 3), (5, 7, 3))]
    assert backend.preprocessing(images[0]) is images[0]  # the graph preprocesses
    expected = np.stack([image.reshape(-1, 3).astype(np.float32).mean(0) @ WEIGHT for image in images])
    np.testing.assert_allclose(backend(images), expected, rtol=1e-4)


def test_bgr_graphs_get_the_channels_they_ask_for(tmp_path: Path) -> None:
    """Images reach a backend as RGB (load_image); a BGR graph must see them reversed."""
    image = load_image(CAT)
    rgb = open_backend("onnx", None, str(tiny_classifier(tmp_path / "rgb.onnx", layout=INPUT_RGB)))
    bgr = open_backend("onnx", None, str(tiny_classifier(tmp_path / "bgr.onnx", layout=INPUT_BGR)))
    as_bgr = image[..., ::-1].reshape(-1, 3).astype(np.float32).mean(0) @ WEIGHT
    np.testing.assert_allclose(bgr([image])[0], as_bgr, rtol=1e-4)
    np.testing.assert_allclose(rgb([image])[0], image.reshape(-1, 3).astype(np.float32).mean(0) @ WEIGHT, rtol=1e-4)
    assert not np.allclose(bgr([image])[0], rgb([image])[0], rtol=1e-3)


def test_example_input_is_what_the_graph_takes(tmp_path: Path) -> None:
    for layout in (INPUT_FLOAT, INPUT_RGB, INPUT_BGR):
        backend = open_backend("onnx", None, str(tiny_classifier(tmp_path / f"{layout}.onnx", layout=layout)))
        assert backend(backend.example_input(2)).shape == (2, 1000)


def test_files_without_metadata_fall_back_to_their_shapes(tmp_path: Path) -> None:
    backend = open_backend("onnx", None, str(tiny_classifier(tmp_path / "bare.onnx", metadata=False, size=48)))
    assert (backend.arch, backend.preprocessing.size, backend.num_classes) == ("unknown", 48, 1000)


def test_bad_files_and_mismatches_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(OnnxModelError, match="onnxruntime cannot load this model"):
        open_backend("onnx", None, str(garbage))
    with pytest.raises(OnnxModelError, match="not found"):
        open_backend("onnx", None, str(tmp_path / "missing.onnx"))
    with pytest.raises(UsageError, match="needs an exported model"):
        open_backend("onnx", "efficientnet_lite0", "default")
    model = tiny_classifier(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="holds efficientnet_lite0, not b0"):
        open_backend("onnx", "b0", str(model))
    assert main(["predict", "--backend", "onnx", "--weights", str(garbage), str(CAT)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error:") and len(err.splitlines()) == 1


def test_predict_on_the_onnx_backend_never_imports_torch(tmp_path: Path) -> None:
    model = tiny_classifier(tmp_path / "m.onnx")
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "effnet", "predict", "--backend", "onnx", "--weights", str(model),
         "--topk", "3", str(CAT)],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": ""}, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("(class ") == 3
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert "onnxruntime" in imported and "effnet.runtime.onnx_backend" in imported
    assert not [name for name in imported if re.match(r"torch(\.|$)", name)]


def test_predict_and_the_server_batch_images_of_different_sizes(tmp_path: Path) -> None:
    """A graph with in-graph preprocessing takes raw images: a batch of two sizes must not be
    stacked (numpy cannot) but handed over as a list, in predict and in the server's batcher."""
    import asyncio

    from effnet import Predictor
    from effnet.serve.batcher import DynamicBatcher

    predictor = Predictor(weights=str(tiny_classifier(tmp_path / "m.onnx", layout=INPUT_RGB)), topk=1)
    assert predictor.backend.name == "onnx"  # --backend auto picked onnxruntime for the file
    rng = np.random.default_rng(2)
    paths = []
    for index, (height, width) in enumerate(((20, 30), (41, 17))):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    images = [load_image(path) for path in paths]
    expected = [image.reshape(-1, 3).astype(np.float32).mean(0) @ WEIGHT for image in images]
    results = dict(predictor.predict_files(paths))
    assert [results[path][0].index for path in paths] == [int(np.argmax(e)) for e in expected]

    async def serve_both() -> list[np.ndarray]:
        batcher = DynamicBatcher(predictor.backend, max_batch=4, max_wait=0.05)
        await batcher.start()
        try:
            outcomes = await asyncio.gather(*(batcher.run(image) for image in images))
        finally:
            await batcher.close()
        return [outcome.output for outcome in outcomes]

    outputs = asyncio.run(serve_both())
    for output, want in zip(outputs, expected):
        np.testing.assert_allclose(output, want, rtol=1e-4, atol=1e-3)


def test_sessions_can_stop_spinning_after_each_run(tmp_path: Path) -> None:
    # measured: with two sessions run in turn, the idle one's spinning threads doubled the other's
    # batch-1 latency (7.6 -> 16.4 ms, Lite0, 2 threads); effnet bench keeps many sessions
    from effnet.runtime.onnx_backend import open_session

    model = tiny_classifier(tmp_path / "m.onnx")
    options = open_session(model, stop_spinning=True).get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # the default: onnxruntime's spinning
        open_session(model).get_session_options().get_session_config_entry("session.force_spinning_stop")
