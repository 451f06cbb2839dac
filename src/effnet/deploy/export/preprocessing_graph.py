"""Preprocessing as ONNX ops: uint8 images of any size in, the network's float input out.

A graph built here goes in front of an exported network (``attach_preprocessing``), so the
file takes decoded images as they come (OpenCV's BGR too) and resizes, crops and normalizes
inside, exactly as ``data.transforms.Preprocessing`` does in Python: a deployment then needs
no image code of its own, and cannot get the recipe wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper

from ...data.transforms import Preprocessing
from ...errors import UsageError

#: The preprocessing graph's input (uint8 NHWC images), and its output, which is the exported
#: network's input (float32 NCHW): the name the two graphs are joined on.
IMAGE_NAME, INPUT_NAME = "image", "input"
#: The lowest opset with an antialiasing ``Resize`` (what reproduces Pillow's filters).
MIN_OPSET = 18


RESIZE_MODES = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}


class _Builder:
    """Nodes and constants of one graph, every name under ``preprocess/`` (the network's
    names never collide with them once the two graphs are merged)."""

    def __init__(self, interpolation: str) -> None:
        self.nodes: list[Any] = []
        self.constants: list[Any] = []
        self.resize_mode = RESIZE_MODES[interpolation]

    def const(self, name: str, value: Any, dtype: Any) -> str:
        self.constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"preprocess/{name}"))
        return f"preprocess/{name}"

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        output = output if output == INPUT_NAME else f"preprocess/{output}"
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def resize(self, source: str, sizes: str, output: str) -> str:
        """Pillow's filter: antialiased, a=-0.5, edge weights renormalized (``exclude_outside``)."""
        if self.resize_mode == "nearest":
            return self.nearest(source, sizes, output)
        return self.node("Resize", [source, "", "", sizes], output, mode=self.resize_mode, cubic_coeff_a=-0.5,
                         antialias=1, exclude_outside=1, axes=[1, 2], coordinate_transformation_mode="half_pixel")

    def nearest(self, source: str, sizes: str, output: str) -> str:
        """Pillow's nearest neighbour, exactly: output pixel k of an axis reads source pixel
        ``floor(s / 2 + s + ... + s)`` (k additions, ``s`` = input / output extent, summed in
        float64 one step at a time, as Pillow's affine scaling does). ``Resize``'s own nearest
        modes compute ``(k + 0.5) * s`` in float32 and pick another pixel at near-ties."""
        shape = self.node("Shape", [source], f"{output}_in_shape")
        half = self.const(f"{output}_half", [0.5], np.float64)
        one, zero = self.const(f"{output}_one", [1], np.int64), self.const(f"{output}_zero", 0, np.int64)
        picked = source
        for axis, name in ((1, "h"), (2, "w")):
            extent_in = self.node("Gather", [shape, self.const(f"{output}_shape_{name}", [axis], np.int64)],
                                  f"{output}_{name}_in", axis=0)
            extent_out = self.node("Gather", [sizes, self.const(f"{output}_size_{name}", [axis - 1], np.int64)],
                                   f"{output}_{name}_out", axis=0)
            step = self.node("Div", [self.node("Cast", [extent_in], f"{output}_{name}_in_f64", to=TensorProto.DOUBLE),
                                     self.node("Cast", [extent_out], f"{output}_{name}_out_f64",
                                               to=TensorProto.DOUBLE)], f"{output}_{name}_step")
            increments = self.node("Concat", [
                self.node("Mul", [step, half], f"{output}_{name}_first"),
                self.node("Slice", [self.node("Expand", [step, extent_out], f"{output}_{name}_steps"), one, extent_out],
                          f"{output}_{name}_rest"),
            ], f"{output}_{name}_increments", axis=0)
            positions = self.node("CumSum", [increments, zero], f"{output}_{name}_positions")
            index = self.node("Cast", [self.node("Floor", [positions], f"{output}_{name}_floor")],
                              f"{output}_{name}_index", to=TensorProto.INT64)
            last = self.node("Sub", [extent_in, one], f"{output}_{name}_last")
            index = self.node("Min", [index, last], f"{output}_{name}_index_in_range")
            picked = self.node("Gather", [picked, index], f"{output}_{name}_picked" if axis == 1 else output, axis=axis)
        return picked

    def pair(self, first: str, second: str, output: str, names: tuple[str, str]) -> str:
        """Two scalars as a 1-D pair (``Concat`` of their unsqueezed values)."""
        zero_axis = "preprocess/zero_axis"
        return self.node("Concat", [self.node("Unsqueeze", [first, zero_axis], names[0]),
                                    self.node("Unsqueeze", [second, zero_axis], names[1])], output, axis=0)


@dataclass(frozen=True)
class _Image:
    """The (RGB) image tensor and the graph values every crop mode reads."""

    tensor: str
    height: str
    width: str
    target: str  # [size, size]
    hw_axes: str


def preprocessing_graph(preprocessing: Preprocessing, bgr: bool, opset: int) -> Any:
    """uint8 NHWC images of any size -> the network's normalized NCHW float input, in ONNX.

    Mirrors ``Preprocessing.__call__`` step by step: crop box and resize sizes use the same
    float64 arithmetic and rounding as the Python code; the resize runs on uint8 with
    antialiasing, a=-0.5 and renormalized edge weights, which is Pillow's bicubic filter
    (within one grey level). ``center_crop_then_resize`` crops first and resizes the crop;
    Pillow's ``box`` resize also reads pixels just outside the box, so the outermost one or
    two output rows and columns may differ slightly from the Python path.
    """
    if opset < MIN_OPSET:
        raise UsageError("--with-preprocessing needs --opset 18 or newer (antialiased Resize)")
    if preprocessing.interpolation not in RESIZE_MODES:
        raise UsageError(f"in-graph preprocessing supports bicubic, bilinear and nearest, "
                         f"not {preprocessing.interpolation}")
    graph = _Builder(preprocessing.interpolation)
    image = _image_values(graph, preprocessing.size, bgr)
    crop = {"resize": _resize, "center_crop_then_resize": _crop_then_resize}.get(preprocessing.crop_mode,
                                                                                 _resize_then_crop)
    _normalize(graph, crop(graph, image, preprocessing), preprocessing)
    model = helper.make_model(helper.make_graph(
        graph.nodes, "effnet_preprocessing",
        [helper.make_tensor_value_info(IMAGE_NAME, TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       ["batch", 3, preprocessing.size, preprocessing.size])],
        initializer=graph.constants,
    ), opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _image_values(graph: _Builder, size: int, bgr: bool) -> _Image:
    """The image in RGB order, its height and width as scalars, and shared constants."""
    image = IMAGE_NAME
    if bgr:
        image = graph.node("Gather", [IMAGE_NAME, graph.const("bgr_to_rgb", [2, 1, 0], np.int64)], "rgb", axis=3)
    shape = graph.node("Shape", [image], "shape")
    graph.const("zero_axis", [0], np.int64)
    hw_axes = graph.const("hw_axes", [1, 2], np.int64)

    def scalar_dim(axis: int, name: str) -> str:
        index = graph.node("Gather", [shape, graph.const(f"axis{axis}", axis, np.int64)], f"{name}_1d", axis=0)
        return graph.node("Squeeze", [index], name)

    height, width = scalar_dim(1, "height"), scalar_dim(2, "width")
    target = graph.const("target_hw", [size, size], np.int64)
    graph.const("one", 1, np.int64)
    graph.const("two", 2, np.int64)
    return _Image(image, height, width, target, hw_axes)


def _resize(graph: _Builder, image: _Image, preprocessing: Preprocessing) -> str:
    """``resize``: the whole image to size x size (aspect ratio not kept)."""
    return graph.resize(image.tensor, image.target, "resized")


def _crop_then_resize(graph: _Builder, image: _Image, preprocessing: Preprocessing) -> str:
    """``center_crop_then_resize``: the centred square of side floor(short side x crop
    fraction), then resized to size x size."""
    node, one, two = graph.node, "preprocess/one", "preprocess/two"
    short = node("Min", [image.height, image.width], "short")
    side_f = node("Mul", [node("Cast", [short], "short_f64", to=TensorProto.DOUBLE),
                          graph.const("crop_fraction", preprocessing.crop_fraction, np.float64)], "side_f")
    side = node("Max", [node("Cast", [node("Floor", [side_f], "side_floor")], "side_int", to=TensorProto.INT64), one],
                "side")
    top = node("Div", [node("Add", [node("Sub", [image.height, side], "dh"), one], "dh1"), two], "top")
    left = node("Div", [node("Add", [node("Sub", [image.width, side], "dw"), one], "dw1"), two], "left")
    starts = graph.pair(top, left, "starts", ("top_1d", "left_1d"))
    side_1d = node("Unsqueeze", [side, "preprocess/zero_axis"], "side_1d")
    ends = node("Add", [starts, node("Concat", [side_1d, side_1d], "side_2", axis=0)], "ends")
    cropped = node("Slice", [image.tensor, starts, ends, image.hw_axes], "cropped")
    return graph.resize(cropped, image.target, "resized")


def _resize_then_crop(graph: _Builder, image: _Image, preprocessing: Preprocessing) -> str:
    """``resize_then_center_crop``: the shorter side to floor(size / crop fraction), aspect
    ratio kept, then the centred size x size crop."""
    node, size = graph.node, preprocessing.size
    short = int(np.floor(size / preprocessing.crop_fraction))
    short_c = graph.const("short_side", short, np.int64)
    height_f = node("Cast", [image.height], "height_f64", to=TensorProto.DOUBLE)
    width_f = node("Cast", [image.width], "width_f64", to=TensorProto.DOUBLE)
    short_f = graph.const("short_side_f64", float(short), np.float64)

    def scaled(numerator: str, denominator: str, name: str) -> str:
        exact = node("Div", [node("Mul", [short_f, numerator], f"{name}_num"), denominator], f"{name}_ratio")
        floored = node("Cast", [node("Floor", [exact], f"{name}_floor")], f"{name}_int", to=TensorProto.INT64)
        return node("Max", [short_c, floored], name)

    landscape = node("LessOrEqual", [image.height, image.width], "landscape")
    new_h = node("Where", [landscape, short_c, scaled(height_f, width_f, "tall_h")], "new_h")
    new_w = node("Where", [landscape, scaled(width_f, height_f, "wide_w"), short_c], "new_w")
    full = graph.resize(image.tensor, graph.pair(new_h, new_w, "resize_hw", ("new_h_1d", "new_w_1d")), "resized_full")
    size_c = graph.const("size", size, np.int64)
    two_f = graph.const("two_f64", 2.0, np.float64)

    def offset(extent: str, name: str) -> str:
        half = node("Div", [node("Cast", [node("Sub", [extent, size_c], f"{name}_extra")], f"{name}_extra_f",
                                 to=TensorProto.DOUBLE), two_f], f"{name}_half")
        return node("Cast", [node("Round", [half], f"{name}_round")], name, to=TensorProto.INT64)

    starts = graph.pair(offset(new_h, "crop_top"), offset(new_w, "crop_left"), "crop_starts",
                        ("crop_top_1d", "crop_left_1d"))
    ends = node("Add", [starts, image.target], "crop_ends")
    return node("Slice", [full, starts, ends, image.hw_axes], "resized")


def _normalize(graph: _Builder, resized: str, preprocessing: Preprocessing) -> str:
    """uint8 NHWC -> float NCHW, (x / 255 - mean) / std as one Div and one Sub."""
    nchw = graph.node("Transpose", [resized], "nchw_u8", perm=[0, 3, 1, 2])
    scale = 255.0 * np.asarray(preprocessing.std, np.float32)
    offset = np.asarray(preprocessing.mean, np.float32) / np.asarray(preprocessing.std, np.float32)
    as_float = graph.node("Cast", [nchw], "nchw_f32", to=TensorProto.FLOAT)
    divided = graph.node("Div", [as_float, graph.const("norm_scale", scale.reshape(3, 1, 1), np.float32)], "scaled")
    return graph.node("Sub", [divided, graph.const("norm_offset", offset.reshape(3, 1, 1), np.float32)], INPUT_NAME)


def attach_preprocessing(network: Any, preprocessing: Any) -> Any:
    """One graph: the preprocessing's output feeds the network's input."""
    preprocessing.ir_version = network.ir_version
    return compose.merge_models(preprocessing, network, io_map=[(INPUT_NAME, INPUT_NAME)], producer_name="effnet")
