"""Safe image decoding to RGB uint8 arrays: any format Pillow reads, any mode, EXIF-rotated.

JPEGs take the simplejpeg (libjpeg-turbo) fast path when they need no colour conversion;
everything else, and anything simplejpeg refuses, goes through Pillow. Every failure is an
``ImageError`` naming the file and the reason, so a caller can report it and go on.

One pixel limit applies, ours (``max_pixels``, checked from the header before any pixel is
decoded): Pillow's own decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, 89.5 Mpx) is
raised to ours when ours is higher, as Pillow has no per-call setting (it is never lowered).
"""

from __future__ import annotations

import io
import os
import re
import struct
import threading
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, TiffImagePlugin, UnidentifiedImageError

from ..errors import EffnetError

try:
    import simplejpeg
except ImportError:  # optional accelerator
    simplejpeg = None

#: Default pixel limit (width x height): above it an image is treated as a decompression bomb.
MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

ImageSource = Union[str, os.PathLike, bytes, "Image.Image", np.ndarray]


class ImageError(EffnetError, ValueError):
    """An input that cannot be used as an image; ``str()`` is one line for the user.

    ``kind`` says what went wrong for callers that act on it (the server's HTTP status):
    ``not_an_image``, ``too_many_pixels`` or ``bad_image`` (unreadable, corrupt, wrong array).
    """

    def __init__(self, source: str, reason: str, kind: str = "bad_image") -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        self.kind = kind


def _describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return f"<{type(source).__name__}>"


def _read_bytes(source: ImageSource, name: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)  # type: ignore[arg-type]
        if not path.exists():
            raise ImageError(name, "file not found")
        if path.is_dir():
            raise ImageError(name, "is a directory, not an image")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageError(name, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(name, "empty file (0 bytes)")
    return data


def _exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # malformed EXIF must never sink a readable photo
        return 1


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an HxWxC array, as ImageOps.exif_transpose does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: np.rot90(a, 1)[::-1],  # transpose
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, -1)[::-1],  # transverse
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(ops[orientation](array)) if orientation in ops else array


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: 16/32-bit scaled (not clipped), alpha composited on white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        high = 65535.0 if image.mode.startswith("I;16") else max(float(values.max()), 1.0)
        image = Image.fromarray(np.clip(values / high * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


_PILLOW_LIMIT = threading.Lock()


def _lift_pillow_limit(max_pixels: int) -> None:
    """Let Pillow open every image our limit allows: its own check would refuse, with its own
    number, what ``max_pixels`` accepts (and warn from 1x its limit). Process-wide, as Pillow
    has no per-call setting, and only ever raised, so a lower limit set by the application
    stays."""
    with _PILLOW_LIMIT:
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
            Image.MAX_IMAGE_PIXELS = max_pixels


#: file signatures of the formats Pillow reads, to say more than "unrecognised" when Pillow
#: cannot open a file that starts like one of them
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"BM", "BMP"),
)
_SAMPLE_FORMATS = {1: "unsigned integer", 2: "signed integer", 3: "floating point"}


def _unopenable(data: bytes) -> tuple[str, str]:
    """(reason, kind) for bytes Pillow identifies as no format: a truncated or unsupported file
    of a known format is named as such, anything else is not an image."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        fmt = "WEBP"
    else:
        fmt = next((name for signature, name in _SIGNATURES if data.startswith(signature)), "")
    if not fmt:
        return "not an image (unrecognised format)", "not_an_image"
    if fmt == "TIFF":
        samples = _tiff_samples(data)
        if samples:
            return f"unsupported TIFF sample format: {samples} (Pillow reads 8- and 16-bit integer TIFFs)", "bad_image"
    Image.init()
    try:
        Image.OPEN[fmt][0](io.BytesIO(data))  # the format's own reader says what stopped it
    except Exception as exc:  # each Pillow plugin raises its own types, often wrapped in SyntaxError
        if any(isinstance(cause, (struct.error, EOFError, IndexError)) for cause in _chain(exc)):
            return f"truncated {fmt} file (it ends after {len(data)} bytes, inside its header)", "bad_image"
        return f"corrupt {fmt} header ({str(exc) or type(exc).__name__})", "bad_image"
    return f"{fmt} file Pillow cannot open", "bad_image"


def _chain(exc: BaseException | None) -> list[BaseException]:
    """An exception and the ones it was raised from or while handling."""
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _tiff_samples(data: bytes) -> str:
    """``3 x 32-bit floating point`` from a TIFF's first directory, or "" if it cannot be read."""
    try:
        directory = TiffImagePlugin.ImageFileDirectory_v2(data[:8])
        stream = io.BytesIO(data)
        stream.seek(directory.next)
        directory.load(stream)
        bits = directory.get(258, (1,))
        kinds = directory.get(339, (1,))
        channels = int(directory.get(277, len(bits)))
    except Exception:  # a directory too damaged to read: the caller says "unsupported" without details
        return ""
    kind = _SAMPLE_FORMATS.get(int(kinds[0]), f"sample format {kinds[0]}")
    return f"{channels} x {bits[0]}-bit {kind}"


def _check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            name, f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(possible decompression bomb)", kind="too_many_pixels",
        )


def _decode_jpeg_fast(data: bytes, name: str, max_pixels: int,
                      min_side: int | None = None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """libjpeg-turbo through simplejpeg: the upright RGB array and the upright full-size
    (height, width), or None where Pillow should decode (not a plain JPEG, or a corrupt one).

    ``min_side``: decode a large JPEG straight to a smaller size, scaling by n/8 in the
    frequency domain (most of the IDCT work skipped; several times faster for a 12-megapixel
    photo); only reductions of at least 2x (smaller ones are slower than a full decode), and
    both sides stay >= ``min_side``.
    """
    if simplejpeg is None or not data.startswith(b"\xff\xd8"):
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "Gray"):
        return None  # CMYK/YCCK: Pillow converts those
    _check_pixels(width, height, name, max_pixels)
    _lift_pillow_limit(max_pixels)  # the EXIF header below is read with Pillow
    reduce = min_side is not None and min(height, width) >= 2 * min_side
    try:
        if reduce:
            array = simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=min_side, min_width=min_side,
                                           min_factor=2.0)
        else:
            array = simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError:
        return None  # truncated or odd files: let Pillow give the precise reason
    orientation = 1
    if b"Exif" in data[:65536]:
        with Image.open(io.BytesIO(data)) as header_only:
            orientation = _exif_orientation(header_only)
    upright = (width, height) if orientation in (5, 6, 7, 8) else (height, width)
    return _orient(array, orientation), upright


def decode_image_reduced(data: bytes, name: str, min_side: int,
                         max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, tuple[int, int]]:
    """Like ``decode_image``, but a large JPEG may come back reduced (sides >= ``min_side``);
    also returns the upright (height, width) of the full-size image, which ``Preprocessing``
    needs to place its crop exactly where a full decode would have it."""
    fast = _decode_jpeg_fast(data, name, max_pixels, min_side)
    if fast is not None:
        return fast
    array = decode_image(data, name, max_pixels)
    return array, array.shape[:2]


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 RGB array, upright per EXIF."""
    fast = _decode_jpeg_fast(data, name, max_pixels)
    if fast is not None:
        return fast[0]
    _lift_pillow_limit(max_pixels)
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_pixels(image.width, image.height, name, max_pixels)
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.asarray(to_rgb(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        reason, kind = _unopenable(data)
        raise ImageError(name, reason, kind=kind) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow refuses past twice its limit before the size is known to us; say it in our words
        # (with our limit, unless the application set a lower one for Pillow)
        found = re.search(r"\((\d+) pixels\)", str(exc))
        limit = min(max_pixels, Image.MAX_IMAGE_PIXELS or max_pixels)
        reason = (f"{int(found.group(1)):,} pixels exceeds the limit of {limit:,} (possible decompression bomb)"
                  if found else f"possible decompression bomb ({exc})")
        raise ImageError(name, reason, kind="too_many_pixels") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower() or "premature" in reason.lower():
            reason = f"truncated or corrupt image ({reason})"
        raise ImageError(name, f"cannot decode image: {reason}") from None


def load_image(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path, bytes, PIL image or array -> HxWx3 uint8 RGB array."""
    name = _describe(source)
    if isinstance(source, np.ndarray):
        array = source
        if array.ndim == 2:
            array = np.stack([array] * 3, axis=-1)
        if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
            raise ImageError(name, f"expected an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
        if array.shape[2] == 1:
            array = np.repeat(array, 3, axis=2)
        if array.shape[2] == 4:
            return np.asarray(to_rgb(Image.fromarray(array.astype(np.uint8), "RGBA")))
        if array.dtype != np.uint8:
            raise ImageError(name, f"expected a uint8 array, got {array.dtype}")
        return array
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, name, max_pixels)
        return np.asarray(to_rgb(ImageOps.exif_transpose(source)))
    return decode_image(_read_bytes(source, name), name, max_pixels)


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive, sorted), by suffix."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
