"""``effnet export``: a model to ONNX, checked against torch, carrying everything needed to use it.

The exported file is verified before it is written: the ONNX checker, then onnxruntime logits
against torch on random inputs (every dynamic axis exercised, including an odd spatial size,
so TF-"same" padding is proven to follow the input). Metadata (architecture, weights,
padding, preprocessing, labels, input layout) goes into the file, so ``effnet predict
--backend onnx --weights model.onnx`` needs nothing else.

Traps handled here:

- TF "same" padding stays dynamic: ``models.layers.same_padding`` is symbolic integer
  arithmetic, exported as shape ops feeding ``Pad``.
- SiLU exports as ``Sigmoid`` + ``Mul``, which onnxruntime fuses (``QuickGelu``); ReLU6 is
  exported as ``clamp`` (one ``Clip`` that fuses into ``Conv``) because the exporter would
  otherwise decompose ``hardtanh`` op by op under symbolic shapes, which takes minutes.
- The default opset (18) is the lowest with an antialiasing ``Resize`` and every
  onnxruntime fusion applies to it (``tests/tasks/test_export.py`` checks the fused graph).
- ``--with-preprocessing`` builds resize, crop and normalization as ONNX ops (uint8
  antialiased bicubic ``Resize``, which reproduces Pillow's filter) in front of the network.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import staged
from ..data.transforms import Preprocessing
from ..errors import EffnetError, UsageError
from ..runtime.onnx_backend import (
    INPUT_BGR,
    INPUT_FLOAT,
    INPUT_RGB,
    encode_metadata,
    open_session,
)
from .arguments import add_model_arguments, keyword_or_int

DESCRIPTION = (
    "Export a model to ONNX. The file is checked right after export (ONNX checker, then "
    "onnxruntime logits vs torch) and carries its architecture, preprocessing and labels."
)

DEFAULT_OPSET = 18
#: The exporter's lowest opset; the highest onnxruntime here runs.
MIN_OPSET, MAX_OPSET = 18, 23
#: Max abs logits difference accepted between onnxruntime and torch on the network itself,
#: unless torch's own float32 error (vs float64) is larger: then ``FLOAT32_SLACK`` times that
#: (random-init nets with logits in the hundreds round at the 1e-3 level in torch too).
TOLERANCE = 1e-4
FLOAT32_SLACK = 4.0
#: Max abs logits difference accepted between in-graph and Python preprocessing: measured on
#: the photos in tests/tasks/test_export.py (largest seen 0.26 on Lite0; see docs/deploy.md).
PREPROCESSING_TOLERANCE = 1.0

INPUT_NAME, OUTPUT_NAME, IMAGE_NAME = "input", "logits", "image"
#: ``export(size=NATIVE_SIZE)``: a fixed input size, the one the weights' preprocessing crops to.
NATIVE_SIZE = "native"
FORMATS = ("onnx", "triton")


class ExportError(EffnetError):
    """The export failed or produced a graph that does not match torch; nothing was written."""


@dataclass
class ExportResult:
    path: Path
    arch: str
    opset: int
    input_layout: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


# -- torch -> ONNX ------------------------------------------------------------------------
def _export_friendly(net: Any) -> Any:
    """Swap ``nn.ReLU6`` for ``clamp``: same values, one ``Clip``, no slow decomposition."""
    import torch
    from torch import nn

    class Clamp6(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.clamp(x, 0.0, 6.0)

    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, name, Clamp6())
    return net


def torch_to_onnx(net: Any, batch: int | None, size: int | None, opset: int, example_size: int) -> Any:
    """The network as an ``onnx.ModelProto``; ``None`` for batch/size means a dynamic axis.

    ``batch`` and the spatial axes are ``torch.export.Dim`` objects when dynamic, so every
    shape in the graph is computed from the input (no Python int is baked in).
    """
    import torch

    dims: dict[int, Any] = {}
    if batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=4096)
    if size is None:
        dims[2] = torch.export.Dim("height", min=8, max=8192)
        dims[3] = torch.export.Dim("width", min=8, max=8192)
    example = torch.randn(batch or 2, 3, size or example_size, size or example_size)
    captured = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(captured), _quiet_logs():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                net, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME], dynamic_shapes=({**dims},) if dims else None, verbose=False,
            )
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    return program.model_proto


@contextlib.contextmanager
def _quiet_logs():
    """The exporter logs a warning per missing torchvision op; none of them concern us."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# -- preprocessing as ONNX ops ------------------------------------------------------------
def preprocessing_graph(preprocessing: Preprocessing, bgr: bool, opset: int) -> Any:
    """uint8 NHWC images of any size -> the network's normalized NCHW float input, in ONNX.

    Mirrors ``Preprocessing.__call__`` step by step: crop box and resize sizes use the same
    float64 arithmetic and rounding as the Python code; the resize runs on uint8 with
    antialiasing, a=-0.5 and renormalized edge weights, which is Pillow's bicubic filter
    (within one grey level). ``center_crop_then_resize`` crops first and resizes the crop;
    Pillow's ``box`` resize also reads pixels just outside the box, so the outermost one or
    two output rows and columns may differ slightly from the Python path.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if opset < 18:
        raise UsageError("--with-preprocessing needs --opset 18 or newer (antialiased Resize)")
    if preprocessing.interpolation not in ("bicubic", "bilinear", "nearest"):
        raise UsageError(f"in-graph preprocessing supports bicubic, bilinear and nearest, "
                         f"not {preprocessing.interpolation}")
    size = preprocessing.size
    nodes: list[Any] = []
    constants: list[Any] = []

    def const(name: str, value: Any, dtype: Any) -> str:
        constants.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), f"preprocess/{name}"))
        return f"preprocess/{name}"

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        output = output if output == INPUT_NAME else f"preprocess/{output}"
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def scalar_dim(axis: int, name: str) -> str:
        return node("Squeeze", [node("Gather", [shape, const(f"axis{axis}", axis, np.int64)], f"{name}_1d", axis=0)],
                    name)

    resize_mode = {"bicubic": "cubic", "bilinear": "linear", "nearest": "nearest"}[preprocessing.interpolation]

    def resize(source: str, sizes: str, output: str) -> str:
        return node("Resize", [source, "", "", sizes], output, mode=resize_mode, cubic_coeff_a=-0.5,
                    antialias=int(resize_mode != "nearest"), exclude_outside=1, axes=[1, 2],
                    coordinate_transformation_mode="half_pixel", nearest_mode="floor")

    image = IMAGE_NAME
    if bgr:
        image = node("Gather", [IMAGE_NAME, const("bgr_to_rgb", [2, 1, 0], np.int64)], "rgb", axis=3)
    shape = node("Shape", [image], "shape")
    zero_axis = const("zero_axis", [0], np.int64)
    hw_axes = const("hw_axes", [1, 2], np.int64)
    height, width = scalar_dim(1, "height"), scalar_dim(2, "width")
    target = const("target_hw", [size, size], np.int64)
    one, two = const("one", 1, np.int64), const("two", 2, np.int64)
    if preprocessing.crop_mode == "resize":
        resized = resize(image, target, "resized")
    elif preprocessing.crop_mode == "center_crop_then_resize":
        short = node("Min", [height, width], "short")
        side_f = node("Mul", [node("Cast", [short], "short_f64", to=TensorProto.DOUBLE),
                              const("crop_fraction", preprocessing.crop_fraction, np.float64)], "side_f")
        side = node("Max", [node("Cast", [node("Floor", [side_f], "side_floor")], "side_int", to=TensorProto.INT64), one],
                    "side")
        top = node("Div", [node("Add", [node("Sub", [height, side], "dh"), one], "dh1"), two], "top")
        left = node("Div", [node("Add", [node("Sub", [width, side], "dw"), one], "dw1"), two], "left")
        starts = node("Concat", [node("Unsqueeze", [top, zero_axis], "top_1d"),
                                 node("Unsqueeze", [left, zero_axis], "left_1d")], "starts", axis=0)
        ends = node("Add", [starts, node("Concat", [node("Unsqueeze", [side, zero_axis], "side_1d")] * 2,
                                         "side_2", axis=0)], "ends")
        cropped = node("Slice", [image, starts, ends, hw_axes], "cropped")
        resized = resize(cropped, target, "resized")
    else:  # resize_then_center_crop: shorter side to floor(size / crop_fraction), then crop
        short = int(np.floor(size / preprocessing.crop_fraction))
        short_c = const("short_side", short, np.int64)
        height_f = node("Cast", [height], "height_f64", to=TensorProto.DOUBLE)
        width_f = node("Cast", [width], "width_f64", to=TensorProto.DOUBLE)
        short_f = const("short_side_f64", float(short), np.float64)

        def scaled(numerator: str, denominator: str, name: str) -> str:
            exact = node("Div", [node("Mul", [short_f, numerator], f"{name}_num"), denominator], f"{name}_ratio")
            floored = node("Cast", [node("Floor", [exact], f"{name}_floor")], f"{name}_int", to=TensorProto.INT64)
            return node("Max", [short_c, floored], name)

        landscape = node("LessOrEqual", [height, width], "landscape")
        new_h = node("Where", [landscape, short_c, scaled(height_f, width_f, "tall_h")], "new_h")
        new_w = node("Where", [landscape, scaled(width_f, height_f, "wide_w"), short_c], "new_w")
        sizes = node("Concat", [node("Unsqueeze", [new_h, zero_axis], "new_h_1d"),
                                node("Unsqueeze", [new_w, zero_axis], "new_w_1d")], "resize_hw", axis=0)
        full = resize(image, sizes, "resized_full")
        size_c = const("size", size, np.int64)
        two_f = const("two_f64", 2.0, np.float64)

        def offset(extent: str, name: str) -> str:
            half = node("Div", [node("Cast", [node("Sub", [extent, size_c], f"{name}_extra")], f"{name}_extra_f",
                                     to=TensorProto.DOUBLE), two_f], f"{name}_half")
            return node("Cast", [node("Round", [half], f"{name}_round")], name, to=TensorProto.INT64)

        starts = node("Concat", [node("Unsqueeze", [offset(new_h, "crop_top"), zero_axis], "crop_top_1d"),
                                 node("Unsqueeze", [offset(new_w, "crop_left"), zero_axis], "crop_left_1d")],
                      "crop_starts", axis=0)
        ends = node("Add", [starts, target], "crop_ends")
        resized = node("Slice", [full, starts, ends, hw_axes], "resized")
    nchw = node("Transpose", [resized], "nchw_u8", perm=[0, 3, 1, 2])
    scale = 255.0 * np.asarray(preprocessing.std, np.float32)
    offset_v = np.asarray(preprocessing.mean, np.float32) / np.asarray(preprocessing.std, np.float32)
    as_float = node("Cast", [nchw], "nchw_f32", to=TensorProto.FLOAT)
    divided = node("Div", [as_float, const("norm_scale", scale.reshape(3, 1, 1), np.float32)], "scaled")
    node("Sub", [divided, const("norm_offset", offset_v.reshape(3, 1, 1), np.float32)], INPUT_NAME)
    graph = helper.make_graph(
        nodes, "effnet_preprocessing",
        [helper.make_tensor_value_info(IMAGE_NAME, TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, size, size])],
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def attach_preprocessing(network: Any, preprocessing: Any) -> Any:
    """One graph: the preprocessing's output feeds the network's input."""
    from onnx import compose

    preprocessing.ir_version = network.ir_version
    return compose.merge_models(preprocessing, network, io_map=[(INPUT_NAME, INPUT_NAME)], producer_name="effnet")


# -- checks -------------------------------------------------------------------------------
def _test_image(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth deterministic photo-like uint8 image (no files needed for the check)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.int16)
    noise = rng.integers(-6, 7, size=smooth.shape, dtype=np.int16)
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def check_network(path: Path, net: Any, batch: int | None, size: int | None, default_size: int) -> list[dict[str, Any]]:
    """onnxruntime vs torch on random inputs at every shape the file promises to accept."""
    import torch

    session = open_session(path)
    base = size or default_size
    shapes = [(batch or 2, base, base)]
    if size is None:
        shapes.append((batch or 1, base + 1, base + 37))  # odd sizes: TF "same" pads differ
    generator = torch.Generator().manual_seed(0)
    checks = []
    for n, h, w in shapes:
        x = torch.randn(n, 3, h, w, generator=generator)
        with torch.inference_mode():
            expected = net(x).float().numpy()
            exact = net.double()(x.double()).numpy()
            net.float()
        actual = session.run(None, {INPUT_NAME: x.numpy()})[0]
        own_error = float(np.abs(expected - exact).max())
        checks.append({"what": "network", "shape": [n, 3, h, w], "max_abs_diff": float(np.abs(actual - expected).max()),
                       "tolerance": max(TOLERANCE, FLOAT32_SLACK * own_error)})
    return checks


def check_with_preprocessing(path: Path, net: Any, preprocessing: Preprocessing, bgr: bool) -> list[dict[str, Any]]:
    """The uint8-input graph vs Python preprocessing + torch on odd-sized synthetic images."""
    import torch

    session = open_session(path)
    checks = []
    for seed, (h, w) in enumerate([(301, 457), (480, 353)]):
        image = _test_image(h, w, seed)
        with torch.inference_mode():
            expected = net(torch.from_numpy(preprocessing(image)[None])).float().numpy()
        feed = image[..., ::-1] if bgr else image
        actual = session.run(None, {IMAGE_NAME: np.ascontiguousarray(feed[None])})[0]
        checks.append({
            "what": "with preprocessing", "shape": [1, h, w, 3], "max_abs_diff": float(np.abs(actual - expected).max()),
            "tolerance": PREPROCESSING_TOLERANCE, "same_top1": bool(actual.argmax() == expected.argmax()),
        })
    return checks


# -- the task -----------------------------------------------------------------------------
def export(
    model: str | None = None,
    weights: Any = "default",
    output: str | os.PathLike = "model.onnx",
    *,
    batch: int | None = None,
    size: int | str | None = None,
    opset: int = DEFAULT_OPSET,
    with_preprocessing: bool = False,
    bgr: bool = False,
    log: Any = None,
) -> ExportResult:
    """Export, check and write ``output``; ``None`` batch/size mean dynamic axes, size
    ``NATIVE_SIZE`` the weights' own input size.

    Raises ``ExportError`` (and writes nothing) when a check fails.
    """
    from ..runtime.torch_backend import TorchBackend

    say = log or (lambda message: None)
    if size == NATIVE_SIZE and with_preprocessing:
        raise UsageError("a fixed native size and --with-preprocessing exclude each other")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UsageError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, not {opset}")
    if bgr and not with_preprocessing:
        raise UsageError("--bgr only applies with --with-preprocessing")
    started = time.perf_counter()
    backend = TorchBackend.load(model, weights, channels_last=False)
    net = _export_friendly(backend.model)
    entry = getattr(net, "pretrained_cfg", None)
    preprocessing = backend.preprocessing
    if size == NATIVE_SIZE:
        size = preprocessing.size
    elif size is not None:
        preprocessing = preprocessing.with_size(size)
    if with_preprocessing:
        size = preprocessing.size  # the graph resizes any image to exactly this
    layout = (INPUT_BGR if bgr else INPUT_RGB) if with_preprocessing else INPUT_FLOAT
    axes = f"batch {'dynamic' if batch is None else batch}, size {'dynamic' if size is None else size}"
    say(f"exporting {backend.arch} ({axes}, opset {opset}) ...")
    network = torch_to_onnx(net, batch, size, opset, preprocessing.size)
    metadata = {
        "format": 1,
        "arch": backend.arch,
        "weights": entry.name if entry else "random",
        "weights_sha256": (entry.sha256 or "") if entry else "",
        "padding": net.padding.value,
        "bn_eps": net.bn_eps,
        "num_classes": net.num_classes,
        "labels": entry.labels if entry and isinstance(entry.labels, str) else list(backend.labels),
        "preprocessing": preprocessing.to_dict(),
        "input": layout,
    }
    output = Path(output)
    import onnx

    with staged(output) as temporary:  # renamed to output only if every check below passes
        onnx.save_model(network, temporary)
        say("checking: onnx checker, onnxruntime vs torch ...")
        onnx.checker.check_model(str(temporary), full_check=True)
        checks = check_network(temporary, net, batch, size, preprocessing.size)
        if with_preprocessing:
            full = attach_preprocessing(onnx.load(str(temporary)), preprocessing_graph(preprocessing, bgr, opset))
            onnx.save_model(_with_metadata(full, metadata), temporary)
            onnx.checker.check_model(str(temporary), full_check=True)
            checks += check_with_preprocessing(temporary, net, preprocessing, bgr)
        else:
            onnx.save_model(_with_metadata(network, metadata), temporary)
        failed = [c for c in checks if c["max_abs_diff"] > c["tolerance"] or not c.get("same_top1", True)]
        if failed:
            worst = max(failed, key=lambda c: c["max_abs_diff"])
            raise ExportError(f"exported graph does not match torch: {worst['what']} at {worst['shape']} differs "
                              f"by {worst['max_abs_diff']:.3g} (tolerance {worst['tolerance']:g}); nothing written")
    return ExportResult(output, backend.arch, opset, layout, checks, time.perf_counter() - started, metadata)


def _with_metadata(model: Any, metadata: dict[str, Any]) -> Any:
    from onnx import helper

    del model.metadata_props[:]
    helper.set_model_props(model, encode_metadata(metadata))
    model.producer_name = "effnet"
    model.doc_string = f"{metadata['arch']} ({metadata['weights']}) exported by effnet; input {metadata['input']}"
    return model


# -- command line -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, backend=False)
    parser.add_argument("--output", "-o", required=True,
                        help="the .onnx file to write; with --format triton, the model repository folder")
    parser.add_argument("--format", choices=FORMATS, default="onnx",
                        help="onnx: one .onnx file (default); triton: a Triton Inference Server model "
                             "repository (NAME/config.pbtxt, NAME/labels.txt, NAME/1/model.onnx) for the "
                             "onnxruntime backend with dynamic batching")
    parser.add_argument("--batch", type=keyword_or_int("dynamic", 1, None), default=None, metavar="dynamic|N",
                        help="batch axis: dynamic (default) or a fixed size")
    parser.add_argument("--size", type=keyword_or_int("dynamic", 1, None), default=None, metavar="dynamic|S",
                        help="input height and width: dynamic (default; TF-'same' padding follows the input) "
                             "or a fixed size; with --with-preprocessing, the network size (default: the "
                             "weights' size)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET}-{MAX_OPSET} (default: {DEFAULT_OPSET})")
    parser.add_argument("--with-preprocessing", action="store_true",
                        help="the graph takes uint8 NHWC RGB images of any size and resizes, crops and "
                             "normalizes inside (the weights' own recipe)")
    parser.add_argument("--bgr", action="store_true", help="with --with-preprocessing: the input is BGR (OpenCV)")
    triton = parser.add_argument_group("with --format triton")
    triton.add_argument("--name", help="the model's name in the repository (default: the architecture)")
    triton.add_argument("--max-batch", type=int,
                        help="Triton's max_batch_size for dynamic batching (default: 16; needs --batch dynamic)")
    triton.add_argument("--max-queue-delay-us", type=int,
                        help="how long Triton waits to fill a batch, in microseconds (default: 5000)")
    triton.add_argument("--instances", type=int, help="model instances per device (default: 1)")
    triton.add_argument("--kind", choices=("KIND_AUTO", "KIND_CPU", "KIND_GPU"),
                        help="where Triton runs the instances (default: KIND_AUTO)")


#: the --format triton options and their values when not given (None marks "not given", so a
#: plain ONNX export can refuse them instead of ignoring them)
TRITON_DEFAULTS = {"name": None, "max_batch": 16, "max_queue_delay_us": 5000, "instances": 1, "kind": "KIND_AUTO"}


def run(args: argparse.Namespace) -> int:
    if args.format == "triton":
        for option, default in TRITON_DEFAULTS.items():
            if getattr(args, option) is None:
                setattr(args, option, default)
        return run_triton(args)
    given = [option for option in TRITON_DEFAULTS if getattr(args, option) is not None]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} applies with --format triton only")
    if not str(args.output).endswith(".onnx"):
        raise UsageError(f"--output should end in .onnx: {args.output}")
    result = export(
        args.model, args.weights, args.output, batch=args.batch, size=args.size, opset=args.opset,
        with_preprocessing=args.with_preprocessing, bgr=args.bgr,
        log=lambda message: print(message, file=sys.stderr),
    )
    report(result)
    size_mb = result.path.stat().st_size / 1e6
    print(f"wrote {result.path} ({size_mb:.1f} MB, {result.arch}, opset {result.opset}, input {result.input_layout}) "
          f"in {result.seconds:.0f} s")
    return 0


def run_triton(args: argparse.Namespace) -> int:
    """Export at a fixed spatial size (Triton batches requests of one shape; clients resize to
    the size in the ``preprocessing`` parameter), then lay out the model repository."""
    from ..data.labels import resolve_labels
    from .triton import write_model_repository

    if args.with_preprocessing:
        raise UsageError("--format triton exports the network alone: Triton batches tensors of one shape, and "
                         "in-graph preprocessing takes images of any size (clients preprocess as the config's "
                         "'preprocessing' parameter says)")
    if str(args.output).endswith(".onnx"):
        raise UsageError(f"with --format triton, --output is the model repository folder, not a .onnx file: "
                         f"{args.output}")
    if args.max_batch < 1 and args.batch is None:
        raise UsageError("--max-batch must be at least 1 (or export a fixed --batch)")
    with tempfile.TemporaryDirectory(prefix="effnet-triton-") as folder:
        result = export(
            args.model, args.weights, Path(folder) / "model.onnx", batch=args.batch,
            size=args.size or NATIVE_SIZE, opset=args.opset, log=lambda message: print(message, file=sys.stderr),
        )
        report(result)
        labels = resolve_labels(result.metadata["labels"], result.metadata["num_classes"])
        model_folder = write_model_repository(
            args.output, args.name or result.arch, result.path, labels, result.metadata["preprocessing"],
            max_batch_size=args.max_batch, max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
            kind=args.kind,
        )
    print(f"wrote Triton model repository {args.output} (model {model_folder.name}: config.pbtxt, labels.txt, "
          f"1/model.onnx)")
    return 0


def report(result: ExportResult) -> None:
    """The checks made on the exported graph, one line each."""
    for check in result.checks:
        extra = f", same top-1: {'yes' if check['same_top1'] else 'no'}" if "same_top1" in check else ""
        print(f"check {check['what']:<18} input {'x'.join(map(str, check['shape'])):<15} "
              f"max |onnxruntime - torch| = {check['max_abs_diff']:.2e} (tolerance {check['tolerance']:g}{extra})")
