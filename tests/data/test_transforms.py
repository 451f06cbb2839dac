"""Preprocessing: the TF EfficientNet eval crop and the torchvision crop, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from effnet.data.transforms import TF_LITE_MEAN, TF_LITE_STD, Preprocessing


def test_tf_center_crop_matches_the_reference_formula() -> None:
    # TF efficientnet preprocessing: side = int(S / (S + 32) * min(H, W)), offsets ((H - side) + 1) // 2.
    image = np.random.default_rng(0).integers(0, 256, (300, 451, 3), dtype=np.uint8)
    pre = Preprocessing(224, 224 / 256, "center_crop_then_resize", "bicubic", TF_LITE_MEAN, TF_LITE_STD)
    side = int(224 / (224 + 32) * 300)
    top, left = (300 - side + 1) // 2, (451 - side + 1) // 2
    crop = image[top : top + side, left : left + side]
    expected = np.asarray(Image.fromarray(crop).resize((224, 224), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(pre.resize_crop(image), expected)


def test_torchvision_style_resize_then_center_crop() -> None:
    image = np.random.default_rng(1).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    pre = Preprocessing(224, 0.875, "resize_then_center_crop", "bilinear")
    out = pre.resize_crop(image)
    resized = np.asarray(Image.fromarray(image).resize((341, 256), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(out, resized[16:240, 58:282])


def test_lite_normalization_is_x_minus_127_over_128() -> None:
    pre = Preprocessing(8, 1.0, "resize", "bicubic", TF_LITE_MEAN, TF_LITE_STD)
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    out = pre.normalize(pixels)
    np.testing.assert_allclose(out, (pixels.transpose(2, 0, 1).astype(np.float64) - 127) / 128, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == (3, 16, 16)


@pytest.mark.parametrize("shape", [(1, 1, 3), (7, 500, 3), (600, 9, 3)])
def test_extreme_aspect_ratios_still_give_the_requested_size(shape: tuple[int, int, int]) -> None:
    image = np.zeros(shape, np.uint8)
    for mode in ("center_crop_then_resize", "resize_then_center_crop", "resize"):
        assert Preprocessing(32, 0.875, mode).resize_crop(image).shape == (32, 32, 3)


def test_with_size_keeps_the_tf_crop_padding() -> None:
    pre = Preprocessing(224, 224 / 256, "center_crop_then_resize")
    assert pre.with_size(300).crop_fraction == pytest.approx(300 / 332)
    assert Preprocessing(224, 0.875).with_size(300).crop_fraction == 0.875
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_overrides_change_only_what_is_given() -> None:
    tf = Preprocessing(224, 224 / 256, "center_crop_then_resize", "bicubic", TF_LITE_MEAN, TF_LITE_STD)
    assert tf.with_overrides() == tf
    assert tf.with_overrides(size=None, mean=None) == tf
    assert tf.with_overrides(size=300) == tf.with_size(300)  # a TF crop keeps its padding at a new size
    changed = tf.with_overrides(size=300, crop_fraction=0.9, interpolation="bilinear", mean=(0.5, 0.5, 0.5), std=0.25)
    assert changed == Preprocessing(300, 0.9, "center_crop_then_resize", "bilinear", (0.5,) * 3, (0.25,) * 3)


@pytest.mark.parametrize("changes, message", [
    ({"size": 0}, "size must be a whole number >= 1"),
    ({"crop_fraction": 1.5}, r"crop fraction must be in \(0, 1\]"),
    ({"interpolation": "area"}, "interpolation must be one of bicubic, bilinear, nearest, lanczos"),
    ({"mean": (0.5, 0.5)}, "mean needs 1 or 3 values"),
    ({"mean": (127.5,) * 3}, r"mean is on the 0-1 scale \(127.5 / 255 = 0.5\)"),
    ({"std": (0.5, 0.0, 0.5)}, "std must be > 0"),
])
def test_overrides_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Preprocessing().with_overrides(**changes)
