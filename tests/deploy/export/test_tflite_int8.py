"""The int8 recipe's parts for LiteRT files: percentile ranges read exactly from the tails the
calibration keeps, and bias correction that removes the mean error weight rounding causes
(checked against the quantizer's own rounding on effnet's real Lite0)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ai_edge_quantizer")

from effnet.deploy.export import tflite_int8  # noqa: E402
from effnet.deploy.export.tflite_int8 import PERCENTILE, _Tails  # noqa: E402


def test_tails_give_the_percentile_of_all_images_exactly() -> None:
    rng = np.random.default_rng(0)
    images = [rng.standard_t(3, size=(1, 20, 20, 8)).astype(np.float32) for _ in range(30)]
    tails = _Tails(len(images))
    for image in images:
        tails.add(image)
    everything = np.sort(np.concatenate([image.ravel() for image in images]))
    skip = int(everything.size * (1 - PERCENTILE / 100))
    assert tails.range(clip=True) == (everything[skip], everything[-1 - skip])
    assert tails.range(clip=False) == (everything[0], everything[-1])
    assert skip > 0 and everything[skip] > everything[0]
    # memory: the tails hold one image's quota times the images, not that times the images again
    assert tails.low.size == tails.high.size == skip + 1 < everything.size // 100


def test_ranges_always_hold_zero() -> None:
    """An all-positive activation (after ReLU6) still gets a range from 0: int8's zero point must exist."""
    tails = _Tails(2)
    tails.add(np.full((1, 4, 4, 2), 3.0, np.float32))
    tails.add(np.full((1, 4, 4, 2), 5.0, np.float32))
    assert tails.range(clip=False) == (0.0, 5.0)


def test_the_recipe_is_closer_to_fp32_than_the_quantizer_as_it_comes(photo_thumbnails, acceptance_photos) -> None:
    """Lite0, full-integer, calibrated on six real thumbnails and their mirror images, compared
    on four other photos: percentile ranges + bias correction (``quantize_int8``) give logits
    nearer the float file's than ai_edge_quantizer's true min/max ranges alone; and the
    correction touches every int8 layer (33 convs, 16 depthwise, the classifier)."""
    from PIL import Image

    from effnet._quiet import quiet
    from effnet.deploy.export.tflite import convert, nhwc_network, run_file
    from effnet.runtime.torch_engine import TorchEngine

    net = TorchEngine.load("efficientnet_lite0", "default", channels_last=False).model
    preprocessing = net.pretrained_cfg.preprocessing
    images = [*photo_thumbnails.values(), *(i.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for i in photo_thumbnails.values())]
    prepare = lambda image: preprocessing(np.asarray(image.convert("RGB"))).transpose(1, 2, 0)  # noqa: E731
    calibration = np.stack([prepare(image) for image in images])
    photos = np.stack([prepare(Image.fromarray(photo).convert("RGB")) for photo in acceptance_photos.values()])
    with quiet():
        float_model = convert(nhwc_network(net), preprocessing.size)
        _, means = tflite_int8.calibrate(float_model, calibration, None)
        plain = tflite_int8._quantize(float_model, _min_max_ranges(float_model, calibration), [])
        _, corrected = tflite_int8.correct_biases(float_model, plain, means)
        recipe, floats = tflite_int8.quantize_int8(float_model, calibration, None, float_layers=0)
    assert corrected == 50 and floats == []
    expected = run_file(float_model, photos)
    errors = {name: float(np.mean((run_file(tflite_int8.set_interface(model, "float"), photos) - expected) ** 2))
              for name, model in (("plain", plain), ("recipe", recipe))}
    assert errors["recipe"] < 0.8 * errors["plain"], errors


def _min_max_ranges(float_model: bytes, inputs: np.ndarray) -> dict:
    """The true min/max of every activation over ``inputs`` (no percentile)."""
    from unittest import mock

    with mock.patch.object(tflite_int8, "PERCENTILE", 100.0):
        ranges, _ = tflite_int8.calibrate(float_model, inputs, None)
    return ranges
