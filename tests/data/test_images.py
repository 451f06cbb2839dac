"""Decoding: every format and mode to upright RGB uint8; every failure one clear reason."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effnet.data.images import ImageError, decode_image, load_image


def _encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    import skimage.data

    return skimage.data.chelsea()[:120, :160]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP", "TIFF", "GIF"])
def test_formats_decode_to_rgb_uint8(rgb: np.ndarray, fmt: str) -> None:
    array = decode_image(_encode(Image.fromarray(rgb), fmt))
    assert array.shape == rgb.shape and array.dtype == np.uint8
    tolerance = 40 if fmt in ("JPEG", "WEBP", "GIF") else 0
    assert np.abs(array.astype(int) - rgb.astype(int)).mean() <= max(tolerance, 0) / 4 + 1e-9


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1"])
def test_modes_become_rgb(rgb: np.ndarray, mode: str) -> None:
    image = Image.fromarray(rgb)
    if mode == "I;16":
        grey = np.asarray(image.convert("L")).astype(np.uint16) * 257  # full 16-bit range
        image = Image.fromarray(grey)  # uint16 -> mode I;16
        fmt = "PNG"
    else:
        image = image.convert(mode)
        fmt = "JPEG" if mode == "CMYK" else "PNG"
    array = decode_image(_encode(image, fmt))
    assert array.shape == rgb.shape and array.dtype == np.uint8
    if mode == "I;16":  # scaled, not clipped to white
        expected = np.asarray(Image.fromarray(rgb).convert("L"))
        assert np.abs(array[..., 0].astype(int) - expected).max() <= 1


def test_transparent_pixels_composite_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    array = decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    assert (array == 255).all()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(rgb: np.ndarray, fmt: str) -> None:
    image = Image.fromarray(rgb)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    array = decode_image(_encode(image, fmt, exif=exif.tobytes()))
    assert array.shape == (rgb.shape[1], rgb.shape[0], 3)
    expected = np.asarray(Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(array.astype(int) - expected.astype(int)).mean() < 3


def test_simplejpeg_and_pillow_agree(rgb: np.ndarray) -> None:
    data = _encode(Image.fromarray(rgb), "JPEG", quality=95)
    fast = decode_image(data)
    with Image.open(io.BytesIO(data)) as reference:
        slow = np.asarray(reference.convert("RGB"))
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 2


def test_failures_name_the_file_and_reason(tmp_path: Path, rgb: np.ndarray) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(_encode(Image.fromarray(rgb), "PNG")[:300])
    cases = {
        tmp_path / "missing.jpg": "not found",
        empty: "empty",
        text: "not an image",
        truncated: "cannot decode",
        tmp_path: "directory",
    }
    for path, reason in cases.items():
        with pytest.raises(ImageError) as error:
            load_image(path)
        assert str(path) in str(error.value) and reason in str(error.value)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    huge = _encode(Image.new("L", (4000, 3000)), "PNG")  # 12 Mpx, compresses to a few KB
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(huge, "bomb.png", max_pixels=10_000_000)
    jpeg = _encode(Image.new("RGB", (4000, 3000)), "JPEG")
    with pytest.raises(ImageError, match="decompression bomb"):
        decode_image(jpeg, "bomb.jpg", max_pixels=10_000_000)


def test_arrays_and_pil_images_are_accepted(rgb: np.ndarray) -> None:
    assert load_image(rgb) is rgb
    assert load_image(rgb[..., 0]).shape == rgb.shape
    np.testing.assert_array_equal(load_image(Image.fromarray(rgb)), rgb)
    with pytest.raises(ImageError, match="uint8"):
        load_image(rgb.astype(np.float32))


def test_our_pixel_limit_is_the_only_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """A limit above Pillow's own (Image.MAX_IMAGE_PIXELS, 89.5 Mpx; scaled down here so the
    image stays small) takes effect, and a refusal quotes our limit, not Pillow's."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    big = _encode(Image.new("RGB", (2000, 1500), (10, 20, 30)), "PNG")  # 3 Mpx: past Pillow's error threshold (2x)
    assert decode_image(big, "big.png", max_pixels=5_000_000)[0, 0].tolist() == [10, 20, 30]
    with pytest.raises(ImageError, match=r"2000x1500 = 3,000,000 pixels exceeds the limit of 2,000,000"):
        decode_image(big, "big.png", max_pixels=2_000_000)
    # over twice the limit Pillow refuses on its own, before we see the size: still our words and number
    # (it said "possible decompression bomb (Image size (3000000 pixels) exceeds limit of ...)")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    with pytest.raises(ImageError, match=r"^big.png: 3,000,000 pixels exceeds the limit of 1,400,000 "
                                         r"\(possible decompression bomb\)$"):
        decode_image(big, "big.png", max_pixels=1_400_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)
    tiff = _encode(Image.new("RGB", (1200, 1000)), "TIFF")  # 1.2 Mpx: past Pillow's warning threshold
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(tiff, max_pixels=2_000_000).shape == (1000, 1200, 3)


def test_files_pillow_cannot_open_say_why(rgb: np.ndarray) -> None:
    import tifffile  # test-only: writes TIFF sample formats Pillow cannot

    float_tiff = io.BytesIO()
    tifffile.imwrite(float_tiff, rgb.astype(np.float32) / 255, photometric="rgb")
    with pytest.raises(ImageError, match=r"^f.tif: unsupported TIFF sample format: 3 x 32-bit floating point"):
        decode_image(float_tiff.getvalue(), "f.tif")
    png = _encode(Image.fromarray(rgb), "PNG")
    for cut in (8, 33):  # the signature alone; signature and header chunk, no pixels
        with pytest.raises(ImageError, match=rf"^h.png: truncated PNG file \(it ends after {cut} bytes"):
            decode_image(png[:cut], "h.png")
    with pytest.raises(ImageError, match=r"^t.txt: not an image \(unrecognised format\)$") as error:
        decode_image(b"plain text, not an image", "t.txt")
    assert error.value.kind == "not_an_image"
