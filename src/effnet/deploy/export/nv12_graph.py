"""NV12 frames in, the network's normalized input out, in ONNX ops every NPU compiler takes.

Camera pipelines and NPU boards (RDK X5's BPU takes ``input_type_rt: nv12``) hand over NV12
frames of one fixed size, so the graph built here takes uint8 ``[N, H * 3 / 2, W]`` (the Y
plane, then the interleaved UV plane; ``data.nv12``) and does the rest inside, at any opset
from 11:

- chroma upsampling: a ``ConvTranspose`` with 2x2 kernels of ones, stride 2, one group per
  chroma channel (each chroma sample covers its 2x2 block, as ``data.nv12.nv12_to_rgb``);
- BT.601 colour conversion (video or full range): one 1x1 ``Conv`` (the matrix, offsets in
  its bias), then ``Clip`` to 0-255;
- resize and centre crop: with the frame size fixed, the weights' whole recipe (Pillow's
  antialiased filter, the crop box) is one constant matrix per axis, applied as a ``MatMul``
  pair, columns first, each followed by a ``Clip`` to 0-255 as Pillow clips after each pass
  (``Resize`` with antialiasing needs opset 18; the matrices are what Pillow computes in
  float, read off by resizing identity strips);
- normalization: one ``Mul`` and one ``Sub``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from ...data.nv12 import RANGES, check_frame_size, yuv_to_rgb_matrix
from ...data.transforms import Preprocessing
from ...errors import UsageError
from .preprocessing_graph import IMAGE_NAME, INPUT_NAME

#: the lowest opset these graphs are built at (Clip with min/max inputs, Resize-free)
MIN_OPSET = 11

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"480x640"`` (height x width) or ``"224"`` (square) -> (height, width), sides even."""
    parts = text.lower().split("x")
    try:
        height, width = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        height = width = 0
    if height <= 0 or width <= 0:
        raise UsageError(f"--input-size takes HEIGHTxWIDTH (e.g. 480x640) or one side, not {text!r}")
    check_frame_size(height, width)
    return height, width


def axis_matrix(length: int, resized: int, start: int, size: int, interpolation: str) -> np.ndarray:
    """The (size x length) matrix that resizes one axis from ``length`` to ``resized`` samples
    with Pillow's filter, then keeps samples ``start`` .. ``start + size``."""
    identity = Image.fromarray(np.eye(length, dtype=np.float32), mode="F")
    # width unchanged: Pillow runs only the vertical pass, so column j is the response to sample j
    response = np.asarray(identity.resize((length, resized), _PIL_FILTERS[interpolation]), np.float64)
    return response[start:start + size]


def crop_matrices(preprocessing: Preprocessing, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows: size x height, columns: size x width): ``Preprocessing.resize_crop`` of a
    height x width frame as ``rows @ frame @ columns.T`` (each crop mode's own geometry)."""
    size, interpolation = preprocessing.size, preprocessing.interpolation
    if interpolation not in _PIL_FILTERS:
        raise UsageError(f"--input nv12 supports {', '.join(_PIL_FILTERS)} resizing, not {interpolation}")
    if preprocessing.crop_mode == "resize":
        return axis_matrix(height, size, 0, size, interpolation), axis_matrix(width, size, 0, size, interpolation)
    if preprocessing.crop_mode == "center_crop_then_resize":
        left, top, right, bottom = preprocessing._center_box(height, width)
        rows = axis_matrix(bottom - top, size, 0, size, interpolation)
        columns = axis_matrix(right - left, size, 0, size, interpolation)
        return (np.pad(rows, ((0, 0), (top, height - bottom))), np.pad(columns, ((0, 0), (left, width - right))))
    new_h, new_w = preprocessing._resized_dims(height, width)
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return axis_matrix(height, new_h, top, size, interpolation), axis_matrix(width, new_w, left, size, interpolation)


def nv12_graph(preprocessing: Preprocessing, height: int, width: int, colour_range: str, opset: int,
               batch: int | None = None) -> Any:
    """uint8 NV12 frames ``[batch, height * 3 / 2, width]`` -> float32 ``[batch, 3, size, size]``."""
    if opset < MIN_OPSET:
        raise UsageError(f"--input nv12 needs --opset {MIN_OPSET} or newer")
    if colour_range not in RANGES:
        raise UsageError(f"--nv12-range must be one of {', '.join(RANGES)}, not {colour_range!r}")
    check_frame_size(height, width)
    size = preprocessing.size
    constants: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, value: Any, dtype: Any) -> str:
        constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"nv12/{name}"))
        return f"nv12/{name}"

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        output = output if output == INPUT_NAME else f"nv12/{output}"
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    axes = const("row_axis", [1], np.int64)
    frame = node("Cast", [IMAGE_NAME], "frame", to=TensorProto.FLOAT)
    luma = node("Slice", [frame, const("luma_start", [0], np.int64), const("luma_end", [height], np.int64), axes],
                "luma_rows")
    luma = node("Reshape", [luma, const("luma_shape", [-1, 1, height, width], np.int64)], "luma")
    chroma = node("Slice", [frame, const("chroma_start", [height], np.int64),
                            const("chroma_end", [height * 3 // 2], np.int64), axes], "chroma_rows")
    chroma = node("Reshape", [chroma, const("chroma_shape", [-1, height // 2, width // 2, 2], np.int64)],
                  "chroma_pairs")
    chroma = node("Transpose", [chroma], "chroma_planes", perm=[0, 3, 1, 2])
    chroma = node("ConvTranspose", [chroma, const("upsample", np.ones((2, 1, 2, 2)), np.float32)], "chroma",
                  strides=[2, 2], kernel_shape=[2, 2], group=2)
    yuv = node("Concat", [luma, chroma], "yuv", axis=1)
    matrix, offset = yuv_to_rgb_matrix(colour_range)
    rgb = node("Conv", [yuv, const("yuv_to_rgb", matrix.reshape(3, 3, 1, 1), np.float32),
                        const("yuv_to_rgb_bias", -matrix @ offset, np.float32)], "rgb_unclipped", kernel_shape=[1, 1])
    rgb = node("Clip", [rgb, const("zero", 0.0, np.float32), const("full", 255.0, np.float32)], "rgb")
    rows, columns = crop_matrices(preprocessing, height, width)
    zero, full = "nv12/zero", "nv12/full"
    resized = node("MatMul", [rgb, const("resize_columns", columns.T, np.float32)], "resized_columns_unclipped")
    resized = node("Clip", [resized, zero, full], "resized_columns")  # Pillow clips after each pass
    resized = node("MatMul", [const("resize_rows", rows, np.float32), resized], "resized_unclipped")
    resized = node("Clip", [resized, zero, full], "resized")
    scale = 1.0 / (255.0 * np.asarray(preprocessing.std, np.float64))
    shift = np.asarray(preprocessing.mean, np.float64) / np.asarray(preprocessing.std, np.float64)
    scaled = node("Mul", [resized, const("norm_scale", scale.reshape(1, 3, 1, 1), np.float32)], "scaled")
    node("Sub", [scaled, const("norm_offset", shift.reshape(1, 3, 1, 1), np.float32)], INPUT_NAME)
    batch_dim: int | str = "batch" if batch is None else batch
    model = helper.make_model(helper.make_graph(
        nodes, "effnet_nv12_preprocessing",
        [helper.make_tensor_value_info(IMAGE_NAME, TensorProto.UINT8, [batch_dim, height * 3 // 2, width])],
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch_dim, 3, size, size])],
        initializer=constants,
    ), opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model
