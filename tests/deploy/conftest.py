"""Fixtures shared by the deploy tests: exported Lite0 files, the torch reference, example
photos, and a tiny hand-built ONNX classifier with calibration images for quantization.

The tiny classifier has what EfficientNet-Lite exports have (a stride-2 conv + ReLU6, a
depthwise conv, a 1x1 projection, a residual Add, a spatial mean, a Gemm classifier) and effnet
metadata, so every quantization step runs in seconds without torch. One layer is made
deliberately sensitive: ``conv_b`` scales channel 0 by 1000 (and ``conv_c`` divides it back),
so any int8 range over that tensor crushes the other channels; the sensitivity analysis must
find it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from effnet.data.images import load_image
from effnet.data.transforms import Preprocessing
from effnet.deploy.export.onnx import export
from effnet.runtime import open_engine
from effnet.runtime.onnx_metadata import INPUT_FLOAT, write_metadata

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
TINY_SIZE = 32
TINY_LABELS = [f"thing{i}" for i in range(10)]


@pytest.fixture(scope="session")
def example_photos() -> list[Path]:
    return sorted(EXAMPLES.glob("*.jpg"))


@pytest.fixture(scope="session")
def photo_arrays(example_photos: list[Path]) -> list[np.ndarray]:
    """The example photos, plus a strided and a cropped one (odd sizes and aspect ratios)."""
    images = [load_image(path) for path in example_photos]
    return images + [np.ascontiguousarray(images[0][::2, 1::3]), np.ascontiguousarray(images[1][:301, :457])]


@pytest.fixture(scope="session")
def lite0_dynamic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0 with its real TF-trained weights (TF "same" padding), batch and size dynamic."""
    return export("efficientnet_lite0", "default", tmp_path_factory.mktemp("export") / "lite0.onnx").path


@pytest.fixture(scope="session")
def lite0_with_preprocessing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export("efficientnet_lite0", "default", tmp_path_factory.mktemp("export") / "lite0_pre.onnx",
                  with_preprocessing=True).path


@pytest.fixture(scope="session")
def lite0_torch():
    """The reference: effnet's torch Lite0 with the same weights (NCHW, as exported)."""
    return open_engine("torch", "efficientnet_lite0", "default", channels_last=False)


# -- a tiny classifier to quantize --------------------------------------------------------
def _tiny_classifier(opset: int = 18) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "w_a": rng.normal(0, 0.3, (16, 3, 3, 3)), "b_a": rng.normal(0, 0.1, 16),
        "w_dw": rng.normal(0, 0.3, (16, 1, 3, 3)), "b_dw": rng.normal(0, 0.1, 16),
        "w_b": rng.normal(0, 0.3, (16, 16, 1, 1)), "b_b": rng.normal(0, 0.1, 16),
        "w_c": rng.normal(0, 0.3, (16, 16, 1, 1)), "b_c": rng.normal(0, 0.1, 16),
        "w_fc": rng.normal(0, 0.5, (10, 16)), "b_fc": rng.normal(0, 0.1, 10),
    }
    weights["w_b"][0] *= 1000.0
    weights["b_b"][0] *= 1000.0
    weights["w_c"][:, 0] /= 1000.0
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six"),
                     numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    nodes = [
        helper.make_node("Conv", ["input", "w_a", "b_a"], ["a"], name="conv_a", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["a", "zero", "six"], ["a6"], name="clip_a"),
        helper.make_node("Conv", ["a6", "w_dw", "b_dw"], ["dw"], name="conv_dw", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["dw", "zero", "six"], ["dw6"], name="clip_dw"),
        helper.make_node("Conv", ["dw6", "w_b", "b_b"], ["b"], name="conv_b"),
        helper.make_node("Relu", ["b"], ["br"], name="relu_b"),
        helper.make_node("Conv", ["br", "w_c", "b_c"], ["c"], name="conv_c"),
        helper.make_node("Add", ["c", "a6"], ["residual"], name="add"),
        helper.make_node("ReduceMean", ["residual", "axes"], ["pooled"], name="mean", keepdims=0) if opset >= 18
        else helper.make_node("ReduceMean", ["residual"], ["pooled"], name="mean", keepdims=0, axes=[2, 3]),
        helper.make_node("Gemm", ["pooled", "w_fc", "b_fc"], ["logits"], name="classifier", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    metadata = {"arch": "tiny_test", "weights": "random", "num_classes": 10, "labels": TINY_LABELS,
                "preprocessing": Preprocessing(size=TINY_SIZE, crop_fraction=1.0, crop_mode="resize").to_dict(),
                "input": INPUT_FLOAT}
    write_metadata(model, metadata)
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def tiny_graph() -> Callable[..., onnx.ModelProto]:
    """``tiny_graph(opset=18)``: a fresh copy of the tiny classifier (tests may edit it)."""
    return _tiny_classifier


def _write_images(folder: Path, count: int, seed: int = 0) -> Path:
    """Smooth random colour images (different sizes, so resize runs too)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        side = int(rng.integers(40, 80))
        Image.fromarray(coarse).resize((side + 7, side), Image.Resampling.BICUBIC).save(folder / f"img{index:03d}.png")
    return folder


@pytest.fixture
def write_images() -> Callable[..., Path]:
    """``write_images(folder, count, seed=0)``: ``img000.png`` ... of smooth random colours."""
    return _write_images


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny model, 24 calibration images plus one broken file, and 12 labelled evaluation
    images (``labels.txt``: image i is class i % 10)."""
    root = tmp_path_factory.mktemp("quantize")
    model = root / "tiny.onnx"
    onnx.save(_tiny_classifier(), str(model))
    calib = _write_images(root / "calib", 24)
    (calib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    evaluation = _write_images(root / "eval", 12, seed=1)
    (evaluation / "labels.txt").write_text("".join(f"img{i:03d}.png {i % 10}\n" for i in range(12)))
    return {"root": root, "model": model, "calib": calib, "eval": evaluation}


# -- outputs that cannot be written ----------------------------------------------------------
