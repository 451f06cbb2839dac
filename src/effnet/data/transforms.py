"""Inference preprocessing that travels with weights: crop, resize, normalize (numpy + Pillow).

Two crop conventions exist in the wild, and a weights entry says which one it was trained with:

- ``center_crop_then_resize`` (TensorFlow's EfficientNet eval): crop a centred square of side
  ``int(size / (size + crop_padding) * min(H, W))`` from the original, then resize it to
  ``size``. ``crop_fraction`` here is ``size / (size + 32)``.
- ``resize_then_center_crop`` (torchvision/timm): resize the shorter side to
  ``floor(size / crop_fraction)``, then take the centred ``size x size`` crop.

Resizing uses Pillow's antialiased filters on the uint8 image: for the TF-trained Lite
weights this reproduces the reference pipeline, while torch's non-antialiased bicubic flips
low-confidence answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, get_args

import numpy as np
from PIL import Image

from ..errors import UsageError

CropMode = Literal["center_crop_then_resize", "resize_then_center_crop", "resize"]
Interpolation = Literal["bicubic", "bilinear", "nearest", "lanczos"]

_PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
CROP_MODES: tuple[str, ...] = get_args(CropMode)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: (x - 127) / 128 on 0-255 pixels, written on the 0-1 scale: TF Lite and Keras-style inputs.
TF_LITE_MEAN = (127.0 / 255.0,) * 3
TF_LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class Preprocessing:
    """Everything between a decoded RGB image and the network input.

    ``mean``/``std`` are on the 0-1 scale: input = (pixel / 255 - mean) / std.
    """

    size: int = 224
    crop_fraction: float = 0.875
    crop_mode: CropMode = "resize_then_center_crop"
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Preprocessing":
        known = {k: data[k] for k in ("size", "crop_fraction", "crop_mode", "interpolation") if k in data}
        vectors = {k: tuple(float(v) for v in data[k]) for k in ("mean", "std") if k in data}
        return cls(**known, **vectors)  # type: ignore[arg-type]

    def with_size(self, size: int) -> "Preprocessing":
        """The same recipe at another resolution (TF crops scale with size: S / (S + 32))."""
        fraction = self.crop_fraction
        if self.crop_mode == "center_crop_then_resize":
            padding = self.size / self.crop_fraction - self.size
            fraction = size / (size + padding)
        return replace(self, size=size, crop_fraction=fraction)

    def with_overrides(
        self,
        *,
        size: int | None = None,
        crop_fraction: float | None = None,
        crop_mode: str | None = None,
        interpolation: str | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ) -> "Preprocessing":
        """The recipe with the given fields replaced (None keeps one), for weights or files whose
        recorded preprocessing is missing or wrong. A new ``size`` keeps a TF crop's padding, as
        ``with_size`` does, unless ``crop_fraction`` is given too. ``mean``/``std``: one value
        for every channel or three, on the 0-1 scale. Raises ``UsageError`` (a ``ValueError``)
        naming the field."""
        recipe = self if size is None else self.with_size(_whole(size))
        changes: dict[str, Any] = {}
        if crop_fraction is not None:
            if not 0 < crop_fraction <= 1:
                raise UsageError(f"preprocessing crop fraction must be in (0, 1], not {crop_fraction}")
            changes["crop_fraction"] = float(crop_fraction)
        if crop_mode is not None:
            changes["crop_mode"] = _one_of("crop mode", crop_mode, CROP_MODES)
        if interpolation is not None:
            changes["interpolation"] = _one_of("interpolation", interpolation, INTERPOLATIONS)
        if mean is not None:
            changes["mean"] = _channels("mean", mean)
        if std is not None:
            changes["std"] = _channels("std", std)
            if min(changes["std"]) <= 0:
                raise UsageError(f"preprocessing std must be > 0, not {std}")
        return replace(recipe, **changes)

    # -- the pipeline -------------------------------------------------------------------
    def resize_crop(self, image: np.ndarray, source_size: tuple[int, int] | None = None) -> np.ndarray:
        """HxWx3 uint8 -> size x size x 3 uint8, per ``crop_mode``.

        ``source_size`` (height, width) says that ``image`` is a reduced decode (JPEG DCT
        scaling) of a larger original: the crop is then placed where it lies in the original,
        in fractional coordinates, so the network sees the same region as from a full decode
        instead of one shifted by the crop's rounding at the reduced size.
        """
        if source_size is not None and tuple(source_size) != image.shape[:2]:
            return self._resize_crop_reduced(image, source_size)
        pil = Image.fromarray(image)
        resample = _PIL_FILTERS[self.interpolation]
        height, width = image.shape[:2]
        if self.crop_mode == "resize":
            return np.asarray(pil.resize((self.size, self.size), resample))
        if self.crop_mode == "center_crop_then_resize":
            # Crop first, then resize: a resize ``box`` would let the filter read pixels
            # outside the crop, which the reference (decode_and_crop, then resize) never sees.
            left, top, right, bottom = self._center_box(height, width)
            crop = Image.fromarray(image[top:bottom, left:right])
            return np.asarray(crop.resize((self.size, self.size), resample))
        new_h, new_w = self._resized_dims(height, width)
        resized = np.asarray(pil.resize((new_w, new_h), resample))
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return resized[top : top + self.size, left : left + self.size]

    def _center_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        side = max(int(self.crop_fraction * min(height, width)), 1)
        top, left = (height - side + 1) // 2, (width - side + 1) // 2
        return (left, top, left + side, top + side)

    def _resized_dims(self, height: int, width: int) -> tuple[int, int]:
        short = math.floor(self.size / self.crop_fraction)
        if height <= width:
            return short, max(short, int(short * width / height))
        return max(short, int(short * height / width)), short

    def _resize_crop_reduced(self, image: np.ndarray, source_size: tuple[int, int]) -> np.ndarray:
        height, width = source_size
        box: tuple[float, float, float, float]
        if self.crop_mode == "resize":
            box = (0.0, 0.0, float(width), float(height))
        elif self.crop_mode == "center_crop_then_resize":
            box = self._center_box(height, width)
        else:
            new_h, new_w = self._resized_dims(height, width)
            top, left = int(round((new_h - self.size) / 2.0)), int(round((new_w - self.size) / 2.0))
            to_y, to_x = height / new_h, width / new_w
            box = (left * to_x, top * to_y, (left + self.size) * to_x, (top + self.size) * to_y)
        scale_y, scale_x = image.shape[0] / height, image.shape[1] / width
        x0, y0, x1, y1 = box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y
        if self.crop_mode == "center_crop_then_resize":
            # as in the full-size path, the filter must not read beyond the crop: cut to the
            # pixels the fractional box touches, then place the box inside that cut
            left, top = int(x0), int(y0)
            image = image[top : math.ceil(y1), left : math.ceil(x1)]
            x0, y0, x1, y1 = x0 - left, y0 - top, x1 - left, y1 - top
        resample = _PIL_FILTERS[self.interpolation]
        return np.asarray(Image.fromarray(image).resize((self.size, self.size), resample, box=(x0, y0, x1, y1)))

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> 3xHxW float32, (x / 255 - mean) / std."""
        scale = np.float32(255.0) * np.asarray(self.std, np.float32)
        offset = np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)
        chw = image.transpose(2, 0, 1).astype(np.float32)
        return chw / scale[:, None, None] - offset[:, None, None]

    def __call__(self, image: np.ndarray, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return self.normalize(self.resize_crop(image, source_size))


def _whole(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UsageError(f"preprocessing size must be a whole number >= 1, not {size!r}")
    return size


def _one_of(field: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"preprocessing {field} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _channels(field: str, values: float | Sequence[float]) -> tuple[float, float, float]:
    """One value for all channels or one per channel, on the 0-1 scale (a 0-255 value is refused
    with its 0-1 equivalent, rather than silently normalizing every pixel to nearly zero)."""
    given = [float(values)] if isinstance(values, (int, float)) else [float(v) for v in values]
    if len(given) not in (1, 3):
        raise UsageError(f"preprocessing {field} needs 1 or 3 values (R,G,B), not {len(given)}")
    if max(abs(v) for v in given) > 1:
        large = max(given, key=abs)
        raise UsageError(f"preprocessing {field} is on the 0-1 scale ({large:g} / 255 = {large / 255:.4g})")
    return (given[0],) * 3 if len(given) == 1 else (given[0], given[1], given[2])
