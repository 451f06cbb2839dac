"""In-graph preprocessing: the ONNX ops reproduce ``Preprocessing.__call__`` (Pillow), alone
and in front of the exported network.

The reference is ``Preprocessing.__call__`` on the same decoded photo; the graph's resize is
onnxruntime's antialiased ``Resize``, which matches Pillow's filters within one grey level
(measured on the example photos at sizes 96 and 224 for every crop mode: at most 1.0), and
for nearest neighbour the same source pixels Pillow picks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from effnet.data.images import load_image
from effnet.data.transforms import Preprocessing
from effnet.deploy.export.onnx import PREPROCESSING_TOLERANCE, export
from effnet.deploy.export.preprocessing_graph import preprocessing_graph
from effnet.errors import UsageError
from effnet.runtime import open_engine
from effnet.runtime.onnx_metadata import INPUT_BGR, INPUT_RGB, read_metadata

CROP_MODES = ("resize", "center_crop_then_resize", "resize_then_center_crop")


@pytest.mark.parametrize("crop_mode", CROP_MODES)
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_graph_alone_matches_the_python_path_within_a_grey_level(photo_arrays: list[np.ndarray], crop_mode: str,
                                                                 interpolation: str) -> None:
    preprocessing = Preprocessing(size=96, crop_mode=crop_mode, interpolation=interpolation)
    graph = preprocessing_graph(preprocessing, bgr=False, opset=18)
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    grey_level = 1 / (255 * np.asarray(preprocessing.std, np.float32)).reshape(3, 1, 1)
    for image in photo_arrays:
        (actual,) = session.run(None, {"image": image[None]})
        expected = preprocessing(image)
        assert actual.shape == (1, *expected.shape)
        assert (np.abs(actual[0] - expected) <= 1.001 * grey_level).all()


@pytest.mark.parametrize("crop_mode", CROP_MODES)
@pytest.mark.parametrize("size", [96, 256])
def test_nearest_picks_the_pixels_pillow_picks(photo_arrays: list[np.ndarray], crop_mode: str, size: int) -> None:
    """Exactly: at 256 the espresso photo (400 x 600 -> 292 x 438) has many near-ties, where
    ``Resize``'s own nearest modes pick a neighbouring pixel."""
    preprocessing = Preprocessing(size=size, crop_mode=crop_mode, interpolation="nearest")
    graph = preprocessing_graph(preprocessing, bgr=False, opset=18)
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    for image in photo_arrays:
        (actual,) = session.run(None, {"image": image[None]})
        assert np.array_equal(actual[0], preprocessing(image))


def test_bgr_input_is_reordered_before_anything_else(photo_arrays: list[np.ndarray]) -> None:
    preprocessing = Preprocessing(size=64)
    sessions = [onnxruntime.InferenceSession(preprocessing_graph(preprocessing, bgr, 18).SerializeToString(),
                                             providers=["CPUExecutionProvider"]) for bgr in (False, True)]
    image = photo_arrays[0]
    (from_rgb,) = sessions[0].run(None, {"image": image[None]})
    (from_bgr,) = sessions[1].run(None, {"image": np.ascontiguousarray(image[None, ..., ::-1])})
    assert np.array_equal(from_rgb, from_bgr)


def test_old_opsets_and_unknown_filters_are_refused() -> None:
    with pytest.raises(UsageError, match="--opset 18 or newer"):
        preprocessing_graph(Preprocessing(), bgr=False, opset=17)
    with pytest.raises(UsageError, match="not lanczos"):
        preprocessing_graph(Preprocessing(interpolation="lanczos"), bgr=False, opset=18)


def test_exported_graph_matches_the_python_path_on_photos(lite0_with_preprocessing: Path, lite0_torch,
                                                          photo_arrays: list[np.ndarray]) -> None:
    engine = open_engine("onnxruntime", None, str(lite0_with_preprocessing))
    assert engine.takes_images and read_metadata(lite0_with_preprocessing)["input"] == INPUT_RGB
    actual = engine(photo_arrays)  # different sizes in one call
    expected = lite0_torch(np.stack([lite0_torch.preprocessing(image) for image in photo_arrays]))
    assert actual.argmax(1).tolist() == expected.argmax(1).tolist()
    assert np.abs(actual - expected).max() < PREPROCESSING_TOLERANCE


@pytest.mark.slow
def test_bgr_graph_takes_opencv_order(tmp_path: Path, lite0_with_preprocessing: Path,
                                      example_photos: list[Path]) -> None:
    result = export("efficientnet_lite0", "default", tmp_path / "bgr.onnx", with_preprocessing=True, bgr=True)
    assert result.metadata["input"] == INPUT_BGR
    image = load_image(example_photos[0])
    rgb = onnxruntime.InferenceSession(str(lite0_with_preprocessing), providers=["CPUExecutionProvider"])
    bgr = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (from_rgb,) = rgb.run(None, {"image": image[None]})
    (from_bgr,) = bgr.run(None, {"image": np.ascontiguousarray(image[None, ..., ::-1])})
    assert np.array_equal(from_rgb, from_bgr)
