"""RGB <-> NV12 in numpy: the frames camera pipelines and NPU boards (RDK X5) hand over.

NV12 is 4:2:0 YUV: the luma plane (H x W bytes), then one plane of interleaved chroma pairs
(U, V) at half the height and half the width, H/2 rows of W bytes. As one array that is
uint8 ``[H * 3 / 2, W]``, the layout ``effnet export --input nv12`` graphs take (with a batch
axis in front). Colours follow ITU-R BT.601, in video range (Y 16-235, chroma 16-240, what
OpenCV's ``COLOR_YUV2RGB_NV12`` and most camera ISPs use) or full range (0-255, JPEG's).
Chroma is subsampled by averaging each 2x2 block and upsampled by repeating it.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

RANGES = ("video", "full")
#: BT.601 luma weights of R, G, B
_KR, _KB = 0.299, 0.114


def _scales(colour_range: str) -> tuple[float, float, float]:
    """(luma offset, luma scale, chroma scale) mapping 0-1 values to the range's bytes."""
    if colour_range not in RANGES:
        raise UsageError(f"NV12 colour range must be one of {', '.join(RANGES)}, not {colour_range!r}")
    return (16.0, 219.0 / 255.0, 224.0 / 255.0) if colour_range == "video" else (0.0, 1.0, 1.0)


def rgb_to_yuv_matrix(colour_range: str = "video") -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, offset): [Y, U, V] = matrix @ [R, G, B] + offset, on 0-255 values."""
    offset, luma, chroma = _scales(colour_range)
    kg = 1.0 - _KR - _KB
    y = np.array([_KR, kg, _KB])
    u = (np.array([0.0, 0.0, 1.0]) - y) / (2 * (1 - _KB))
    v = (np.array([1.0, 0.0, 0.0]) - y) / (2 * (1 - _KR))
    return np.stack([y * luma, u * chroma, v * chroma]), np.array([offset, 128.0, 128.0])


def yuv_to_rgb_matrix(colour_range: str = "video") -> tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix, offset): [R, G, B] = matrix @ ([Y, U, V] - offset); the inverse of
    ``rgb_to_yuv_matrix``."""
    matrix, offset = rgb_to_yuv_matrix(colour_range)
    return np.linalg.inv(matrix), offset


def check_frame_size(height: int, width: int) -> None:
    """NV12 halves both sides for chroma: they must be even (and positive)."""
    if height < 2 or width < 2 or height % 2 or width % 2:
        raise UsageError(f"NV12 needs even frame sides, not {height}x{width}")


def rgb_to_nv12(image: np.ndarray, colour_range: str = "video") -> np.ndarray:
    """HxWx3 uint8 RGB -> uint8 [H * 3 / 2, W] NV12 (H and W even)."""
    height, width = image.shape[:2]
    check_frame_size(height, width)
    matrix, offset = rgb_to_yuv_matrix(colour_range)
    yuv = image.astype(np.float64) @ matrix.T + offset
    luma = yuv[..., 0]
    chroma = yuv[..., 1:].reshape(height // 2, 2, width // 2, 2, 2).mean(axis=(1, 3))
    planes = np.concatenate([luma, chroma.reshape(height // 2, width)], axis=0)
    return np.clip(np.rint(planes), 0, 255).astype(np.uint8)


def nv12_to_rgb(frame: np.ndarray, colour_range: str = "video") -> np.ndarray:
    """uint8 [H * 3 / 2, W] NV12 -> HxWx3 uint8 RGB (chroma repeated over each 2x2 block)."""
    rows, width = frame.shape
    height = rows * 2 // 3
    check_frame_size(height, width)
    luma = frame[:height].astype(np.float64)
    chroma = frame[height:].reshape(height // 2, width // 2, 2).astype(np.float64)
    chroma = chroma.repeat(2, axis=0).repeat(2, axis=1)
    matrix, offset = yuv_to_rgb_matrix(colour_range)
    yuv = np.concatenate([luma[..., None], chroma], axis=-1) - offset
    return np.clip(np.rint(yuv @ matrix.T), 0, 255).astype(np.uint8)


def fit_frame(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A photo framed as a camera of ``height`` x ``width`` would frame the scene: scaled
    (bicubic) to cover the frame, aspect ratio kept, and the centre cut out (HxWx3 uint8)."""
    from PIL import Image

    scale = max(height / image.shape[0], width / image.shape[1])
    cover = (max(width, round(image.shape[1] * scale)), max(height, round(image.shape[0] * scale)))
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
        cover, Image.Resampling.BICUBIC))
    top, left = (cover[1] - height) // 2, (cover[0] - width) // 2
    return resized[top:top + height, left:left + width]
