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
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from PIL import Image

CropMode = Literal["center_crop_then_resize", "resize_then_center_crop", "resize"]
Interpolation = Literal["bicubic", "bilinear", "nearest", "lanczos"]

_PIL_FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}

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
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return data

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
        return Preprocessing(size, fraction, self.crop_mode, self.interpolation, self.mean, self.std)

    # -- the pipeline -------------------------------------------------------------------
    def resize_crop(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> size x size x 3 uint8, per ``crop_mode``."""
        pil = Image.fromarray(image)
        resample = _PIL_FILTERS[self.interpolation]
        height, width = image.shape[:2]
        if self.crop_mode == "resize":
            return np.asarray(pil.resize((self.size, self.size), resample))
        if self.crop_mode == "center_crop_then_resize":
            side = int(self.crop_fraction * min(height, width))
            side = max(side, 1)
            top, left = (height - side + 1) // 2, (width - side + 1) // 2
            # Crop first, then resize: a resize ``box`` would let the filter read pixels
            # outside the crop, which the reference (decode_and_crop, then resize) never sees.
            crop = Image.fromarray(image[top : top + side, left : left + side])
            return np.asarray(crop.resize((self.size, self.size), resample))
        short = math.floor(self.size / self.crop_fraction)
        if height <= width:
            new_h, new_w = short, max(short, int(short * width / height))
        else:
            new_h, new_w = max(short, int(short * height / width)), short
        resized = np.asarray(pil.resize((new_w, new_h), resample))
        top = int(round((new_h - self.size) / 2.0))
        left = int(round((new_w - self.size) / 2.0))
        return resized[top : top + self.size, left : left + self.size]

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> 3xHxW float32, (x / 255 - mean) / std."""
        scale = np.float32(255.0) * np.asarray(self.std, np.float32)
        offset = np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)
        chw = image.transpose(2, 0, 1).astype(np.float32)
        return chw / scale[:, None, None] - offset[:, None, None]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.normalize(self.resize_crop(image))
