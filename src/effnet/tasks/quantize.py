"""``effnet quantize``: static int8 post-training quantization that stays fast and accurate.

The recipe, and why (measured with ``benchmarks/quantize_bench.py``; docs/deploy.md):

- QDQ format, uint8 activations and int8 per-channel symmetric weights, the combination
  onnxruntime's x86 int8 kernels are built for.
- On x86 CPUs without VNNI (this machine: AVX2 only), onnxruntime multiplies uint8 x int8
  pairs with ``vpmaddubsw``, whose 16-bit sums saturate: with 8-bit weights Lite0 agreed with
  fp32 on 71% of the photos under the int8 kernels. The usual fix, 7-bit weights, costs half
  of every channel's resolution (89.6% agreement); uint8 weights (onnxruntime's u8u8 kernels,
  no saturation) are accurate but slower than fp32 at a fixed size. There, the weights of
  GEMM-backed layers (regular and 1x1 convs, the classifier) get per-channel scales bounded
  by the largest pair of weights the kernel adds in 16 bits (``s8-safe``, ``pair_safe_scales``):
  no saturation, about 102 of 127 levels per channel, int8 speed. Depthwise convs keep 8 bits.
- Exports have a dynamic spatial size, so TF-"same" pads are computed at run time and each
  ``Pad`` ran as dequantize / float pad / quantize (about half of Lite0's int8 time). The
  size is pinned to the preprocessing's and the shape arithmetic folded (``fix_input_size``).
- Activation ranges: the 99.999th percentile (Lite0 with ``s8-safe`` weights agreed with fp32
  on 97.9% of the photos, 95.8% with min/max ranges, 91.7% with entropy ranges).
- Bias correction removes the mean output shift of weight rounding (Lite0: relative logits
  error 0.098 -> 0.021).
- SiLU (``Sigmoid`` + ``Mul``) and the squeeze-excitation multiply stay float by default
  (the benchmark measures B0 with them int8 too).
- Sensitivity analysis: every layer (a conv or the classifier, with its activation) is
  quantized alone and the logits error it causes under the int8 kernels is measured; the few
  most sensitive stay float (``--keep-float``).

The model's own preprocessing (from the ONNX metadata) prepares the calibration images, and
the output gets the same metadata plus how it was quantized, so ``effnet predict --backend
onnx --weights model.int8.onnx`` works as for the float file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._files import staged
from ..data.images import ImageError, find_images, load_image
from ..data.transforms import Preprocessing
from ..errors import EffnetError, UsageError
from ..runtime.onnx_backend import INPUT_FLOAT, encode_metadata, open_session, read_metadata
from .arguments import keyword_or_int

DESCRIPTION = (
    "Quantize an exported ONNX model to int8 (static, per-channel weights) with calibration images, "
    "keep the most sensitive layers float, and report fp32 vs int8 agreement, accuracy, size and speed."
)

METHODS = ("minmax", "percentile", "entropy")
#: How GEMM-backed layers (full and 1x1 convs, the classifier) store their weights: ``s8``
#: int8 in [-127, 127]; ``s7`` int8 in [-64, 64]; ``u8`` uint8 around a zero point of 128.
#: Depthwise convs always use ``s8`` (their kernel multiplies in 32 bits).
WEIGHT_KINDS = ("s8", "s7", "u8", "s8-safe")
#: ``auto`` on x86 CPUs without VNNI (see the module docstring).
AVX2_GEMM_WEIGHTS = "s8-safe"
#: Opsets onnxruntime's QDQ quantizer handles with per-channel weights (axis on DequantizeLinear).
MIN_OPSET, MAX_OPSET = 13, 23
#: Ops quantized by default; ``Clip``/``Relu`` are folded into the preceding conv's range.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Clip", "Relu", "Pad", "GlobalAveragePool", "Flatten")
FLOAT_OPS = ("Sigmoid", "Mul", "ReduceMean")
SENSITIVITY_IMAGES = 16
#: ``--keep-float auto`` tries keeping 0 to this many layers float (the most sensitive that fit)
AUTO_MAX_FLOAT = 4
#: ... holding at most this share of the model's multiply-adds and of its weights (a float
#: layer runs at fp32 speed: Lite0's fourth most sensitive layer, an expand 1x1 at 112x112
#: with 5% of the multiply-adds, cut the int8 speedup at batch 16 from 1.56x to 1.17x; a
#: float classifier, 0.3% of the multiply-adds, kept 27% of the weights in float32) ...
AUTO_FLOAT_MACS = 0.05
#: ... and takes the fewest whose error is within this factor of the best (float layers cost time).
AUTO_TOLERANCE = 1.1


class QuantizeError(EffnetError):
    """Quantization could not run (bad model, bad calibration images); nothing was written."""


# -- inputs -------------------------------------------------------------------------------
def load_float_model(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """The ONNX model and its effnet metadata, or a one-line error saying what is wrong."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path)
    if not path.is_file():
        raise QuantizeError(f"{path}: model file not found")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as exc:
        raise QuantizeError(f"{path}: not an ONNX model ({str(exc).strip()[:120] or type(exc).__name__})") from None
    if not model.graph.node:
        raise QuantizeError(f"{path}: not an ONNX model (no graph)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise QuantizeError(f"{path}: opset {opset} is not supported for int8 quantization; export with "
                            f"--opset {MIN_OPSET}-{MAX_OPSET} (effnet export uses 18)")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "QLinearConv") for n in model.graph.node):
        raise QuantizeError(f"{path}: the model is already quantized")
    metadata = read_metadata({p.key: p.value for p in model.metadata_props})
    if metadata.get("input", INPUT_FLOAT) != INPUT_FLOAT:
        raise QuantizeError(f"{path}: has preprocessing inside (uint8 input); quantize a float-input export "
                            "(effnet export without --with-preprocessing)")
    if len(model.graph.input) != 1:
        raise QuantizeError(f"{path}: expected one image input, found {len(model.graph.input)}")
    return model, metadata


def select_images(folder: str | os.PathLike, num_images: int, role: str = "calibration") -> list[Path]:
    """Up to ``num_images`` image files from ``folder``, spread evenly over its sorted listing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizeError(f"{folder}: {role} folder not found")
    paths = find_images(folder)
    if not paths:
        raise QuantizeError(f"{folder}: no images in the {role} folder (looked for .jpg, .png, .bmp, .webp, .tif ...)")
    if len(paths) > num_images:
        picks = np.linspace(0, len(paths) - 1, num_images).round().astype(int)
        paths = [paths[i] for i in picks]
    return paths


def load_crops(paths: Sequence[Path], preprocessing: Preprocessing, role: str = "calibration",
               progress: bool = False) -> tuple[np.ndarray, list[Path], list[str]]:
    """Decode and resize/crop every image (uint8, N x S x S x 3).

    Unreadable files are skipped and listed (a folder of real photos usually has a few); only
    a folder where none can be read is an error.
    """
    crops, used, failures = [], [], []
    for path in _bar(paths, f"reading {role} images", "img", progress):
        try:
            crops.append(preprocessing.resize_crop(load_image(path)))
            used.append(path)
        except ImageError as error:
            failures.append(str(error))
    if not crops:
        listed = "; ".join(failures[:2])
        raise QuantizeError(f"none of the {len(paths)} {role} images can be read ({listed})")
    return np.stack(crops), used, failures


def _bar(items: Sequence[Any], description: str, unit: str, enabled: bool) -> Any:
    """A tqdm bar on stderr when ``enabled`` (and a terminal), else the items unchanged."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit=unit, dynamic_ncols=True, leave=False, file=sys.stderr)


def normalize(crops: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    return np.stack([preprocessing.normalize(c) for c in crops])


# -- graph preparation --------------------------------------------------------------------
def prepare_graph(model: Any) -> Any:
    """Rewrite spatial means as ``GlobalAveragePool`` (same values; ``Flatten`` after it when
    the mean drops the spatial axes): ``ReduceMean`` has no int8 kernel in onnxruntime, and a
    float op in the middle of an int8 graph costs a dequantize and a quantize of its input."""
    from onnx import helper, numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        nodes.append(node)
        if node.op_type != "ReduceMean":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            axes = constants.get(node.input[1])
        if axes is None or sorted(int(a) % 4 for a in np.ravel(axes)) != [2, 3]:
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
        if not attrs.get("keepdims", 1):
            flat = node.output[0]
            node.output[0] = f"{flat}_pooled"
            nodes.append(helper.make_node("Flatten", [node.output[0]], [flat], name=f"{node.name}_flatten", axis=1))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def fix_input_size(model: Any, size: int) -> Any:
    """Pin height and width to the preprocessing's size and fold every shape computation.

    Exports keep the spatial axes dynamic, so TF-"same" padding is a ``Shape -> ... -> Pad``
    chain computed at run time. onnxruntime cannot run such a ``Pad`` in int8: every one
    becomes dequantize, float pad, quantize of a full feature map (about 40% of Lite0's int8
    time at batch 16, measured with onnxruntime's profiler). With the size fixed, the
    onnxscript optimizer folds the chain to constants and the pads into the convolutions.
    The batch axis stays dynamic.
    """
    from onnxscript import optimizer

    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise QuantizeError(f"expected an N x 3 x H x W image input, found rank {len(dims)}")
    fixed = [dims[axis].dim_value for axis in (2, 3) if dims[axis].HasField("dim_value")]
    if fixed and fixed != [size, size]:
        raise QuantizeError(f"the model's input is fixed at {'x'.join(map(str, fixed))}, not {size}x{size}; "
                            "export with --size dynamic (the default) or quantize at its size")
    for axis in (2, 3):
        dims[axis].ClearField("dim_param")
        dims[axis].dim_value = size
    return optimizer.optimize(model)


def layer_groups(model: Any) -> list[list[str]]:
    """Each conv / Gemm with the activation that reads its output (what int8 kernels fuse)."""
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    groups = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul"):
            group = [node.name]
            group += [c.name for c in consumers.get(node.output[0], []) if c.op_type in ("Clip", "Relu")]
            groups.append(group)
    return groups


#: BatchNorm folded into a conv by the exporter keeps the BN's name; which conv it follows,
#: per block class (timm names).
_BN_TO_CONV = {
    "EfficientNet": {"bn1": "conv_stem", "bn2": "conv_head"},
    "DepthwiseSeparable": {"bn1": "conv_dw", "bn2": "conv_pw"},
    "MBConv": {"bn1": "conv_pw", "bn2": "conv_dw", "bn3": "conv_pwl"},
    "FusedMBConv": {"bn1": "conv_exp", "bn2": "conv_pwl"},
}
_KINDS = {
    "conv_stem": "stem", "conv_dw": "depthwise", "conv_pwl": "project 1x1", "conv_exp": "fused conv",
    "conv": "fused conv", "conv_reduce": "SE reduce", "conv_expand": "SE expand", "conv_head": "head 1x1",
    "classifier": "classifier",
}


def describe_layer(node: Any, weights: dict[str, Any]) -> tuple[str, str]:
    """(torch module path, kind) of a conv/Gemm node, e.g. ``("blocks.1.0.conv_dw", "depthwise 3x3")``.

    The path comes from the exporter's node metadata (name scopes and classes); graphs without
    it get the node name and a kind read from the weight shape.
    """
    props = {p.key: p.value for p in node.metadata_props}
    shape = tuple(weights[node.input[1]].dims) if len(node.input) > 1 and node.input[1] in weights else ()
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    size = f"{shape[2]}x{shape[3]}" if len(shape) == 4 else ""
    try:
        scopes = [s for s in json.loads(props["pkg.torch.onnx.name_scopes"].replace("'", '"'))[1:-1] if s]
        classes = [c.rpartition(".")[2] for c in json.loads(props["pkg.torch.onnx.class_hierarchy"].replace("'", '"'))]
    except (KeyError, ValueError, IndexError):
        scopes, classes = [], []
    if not scopes:
        kind = "classifier" if node.op_type != "Conv" else f"depthwise {size}" if group > 1 else f"conv {size}"
        return node.name, kind
    prefix, _, leaf = scopes[-1].rpartition(".")
    owner = classes[-3] if len(classes) >= 3 else "EfficientNet"
    leaf = _BN_TO_CONV.get(owner, {}).get(leaf, leaf)
    name = f"{prefix}.{leaf}" if prefix else leaf
    if leaf == "conv_pw":
        kind = "project 1x1" if owner == "DepthwiseSeparable" else "expand 1x1"
    else:
        kind = _KINDS.get(leaf, f"conv {size}")
    if kind == "depthwise" or kind == "stem":
        kind = f"{kind} {size}"
    return name, kind


def layer_macs(model: Any) -> dict[str, int]:
    """Multiply-adds per image of every conv/Gemm node (the graph's input size is fixed)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim]
              for value in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {init.name: list(init.dims) for init in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm") and node.input[1] in weights and node.output[0] in shapes:
            per_output = int(np.prod(weights[node.input[1]][1:]))
            macs[node.name] = int(np.prod(shapes[node.output[0]][1:])) * per_output
    return macs


# -- bias correction ----------------------------------------------------------------------
def conv_input_means(model: Any, batches: Iterator[np.ndarray], input_name: str) -> dict[str, np.ndarray]:
    """Per-channel mean of every conv/Gemm input over the calibration images (one float run)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = sorted({n.input[0] for n in probe.graph.node if n.op_type in ("Conv", "Gemm")})
    existing = {o.name for o in probe.graph.output}
    for name in wanted:
        if name not in existing:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    sums: dict[str, np.ndarray] = {}
    count = 0
    for batch in batches:
        for name, value in zip(wanted, session.run(wanted, {input_name: batch})):
            per_image = value.astype(np.float64).mean(axis=(2, 3)) if value.ndim == 4 else value.astype(np.float64)
            sums[name] = sums.get(name, 0) + per_image.sum(axis=0)
        count += len(batch)
    return {name: total / count for name, total in sums.items()}


def pair_safe_scales(weight: np.ndarray) -> np.ndarray:
    """Per output channel, the int8 scale at which no pair of weights that onnxruntime's AVX2
    kernels multiply together can saturate.

    Without VNNI, the uint8 x int8 GEMM and convolution kernels (``vpmaddubsw``) add the
    products of two neighbouring ``k`` (input channel) positions in a signed 16-bit lane:
    ``a0 * w0 + a1 * w1`` with ``a`` in 0..255. It cannot overflow when ``|q0| + |q1| <= 128``
    for every same-signed pair, since 255 x 128 = 32640. So the scale is set by the largest
    same-signed pair sum, not by 64 (the usual 7-bit fix, which halves every channel's
    resolution): in Lite0 the median channel keeps 102 of 127 levels. Pairs are neighbouring
    input channels of 1x1 convs and of the classifier (``Gemm``, weights output x input);
    for other convs (im2col order) any two weights are taken as a possible pair.
    """
    flat = weight.reshape(len(weight), -1).astype(np.float64)
    largest_pair = np.zeros(len(flat))
    for side in (np.clip(flat, 0, None), np.clip(-flat, 0, None)):
        if weight.ndim == 2 or weight.shape[2:] == (1, 1):
            pairs = np.pad(side, ((0, 0), (0, side.shape[1] % 2))).reshape(len(side), -1, 2).sum(-1).max(1)
        else:
            pairs = np.sort(side, axis=1)[:, -2:].sum(1)
        largest_pair = np.maximum(largest_pair, pairs)
    scale = largest_pair / 127  # a pair's sum is at least the largest weight
    return np.where(scale > 0, scale, 1.0).astype(np.float32)


def quantized_weight(weight: np.ndarray, kind: str = "s8") -> np.ndarray:
    """The weight as onnxruntime will store it: per output channel, symmetric, in the
    ``kind`` of ``WEIGHT_KINDS``, dequantized back to float."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    if kind == "s8-safe":
        scale = pair_safe_scales(weight).reshape(-1, *[1] * (weight.ndim - 1))
        return (np.clip(np.round(weight / scale), -127, 127) * scale).astype(np.float32)
    qtype = TensorProto.UINT8 if kind == "u8" else TensorProto.INT8
    qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=kind == "s7", symmetric=True)
    flat = weight.reshape(weight.shape[0], -1).astype(np.float32)
    out = np.empty_like(flat)
    for row, values in enumerate(flat):
        zero_point, scale = compute_scale_zp(values.min(), values.max(), qmin, qmax, symmetric=True)
        scale = np.float32(scale)
        out[row] = (np.clip(np.round(values / scale) + zero_point, qmin, qmax) - zero_point) * scale
    return out.reshape(weight.shape)


def correct_biases(model: Any, means: dict[str, np.ndarray], kinds: dict[str, str], keep_float: set[str]) -> int:
    """Fold the mean output error of weight rounding back into each layer's bias.

    Rounding per-channel weights shifts every output channel's mean by
    ``(W_int8 - W) @ E[x]``; subtracting that from the bias (Nagel et al. 2019, "Data-Free
    Quantization", empirical bias correction) removes most of the weight error in depthwise
    layers, where 9 or 25 weights per channel make the shift large. ``kinds``: weight name ->
    its ``WEIGHT_KINDS`` entry (``s8`` when absent); ``keep_float``: nodes that stay float (left alone). Returns how
    many layers were corrected.
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    corrected = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or node.name in keep_float:
            continue
        if node.input[0] not in means or node.input[1] not in initializers:
            continue
        if node.op_type == "Gemm" and any(a.name == "transB" and a.i == 0 for a in node.attribute):
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        error = quantized_weight(weight, kinds.get(node.input[1], "s8")) - weight
        mean = means[node.input[0]]
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type == "Gemm":
            shift = error @ mean
        elif group == 1:
            shift = error.sum(axis=(2, 3)) @ mean
        elif group == weight.shape[0] and weight.shape[1] == 1:
            shift = error.reshape(len(error), -1).sum(axis=1) * mean
        else:
            continue
        if len(node.input) > 2 and node.input[2] in initializers:
            bias = numpy_helper.to_array(initializers[node.input[2]])
            initializers[node.input[2]].CopyFrom(numpy_helper.from_array((bias - shift).astype(np.float32),
                                                                         node.input[2]))
        else:
            name = f"{node.name}_corrected_bias"
            model.graph.initializer.append(numpy_helper.from_array((-shift).astype(np.float32), name))
            if len(node.input) == 2:
                node.input.append(name)
            else:
                node.input[2] = name
        corrected += 1
    return corrected


def gemm_weight_names(model: Any) -> set[str]:
    """Weights of layers onnxruntime runs as uint8 x int8 GEMM (all but depthwise convs)."""
    initializers = {init.name for init in model.graph.initializer}
    names = set()
    for node in model.graph.node:
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type in ("Conv", "Gemm", "MatMul") and group == 1 and node.input[1] in initializers:
            names.add(node.input[1])
    return names


def cpu_has_vnni() -> bool:
    """Whether onnxruntime's int8 GEMM can use VNNI (no 16-bit saturation) on this CPU."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


# -- calibration and quantization ---------------------------------------------------------
@dataclass
class Layer:
    """One quantizable layer (a conv or the classifier, with the activation fused into it)."""

    name: str
    kind: str
    nodes: list[str]
    macs: int = 0
    weights: int = 0
    error: float = 0.0
    kept_float: bool = False


@dataclass
class Settings:
    method: str = "percentile"
    per_channel: bool = True
    gemm_weights: str = "s8"
    bias_correction: bool = True
    op_types: tuple[str, ...] = QUANTIZED_OPS


def _session(model: Any, threads: int | None = None, optimize: bool = True) -> Any:
    """A session on a file or on a graph still in memory."""
    return open_session(model if isinstance(model, (str, Path)) else model.SerializeToString(), threads, optimize)


def run_batches(session: Any, inputs: np.ndarray, batch_size: int = 16) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + batch_size]})[0]
                           for i in range(0, len(inputs), batch_size)])


class _Batches:
    """The ``CalibrationDataReader`` protocol over a list of ready batches."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.feeds = iter([{input_name: batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def calibrate(model_path: Path, inputs: np.ndarray, settings: Settings, cache: Path, batch_size: int = 8,
              progress: bool = False) -> None:
    """Activation ranges over the calibration images, saved to ``cache`` for every later
    ``quantize_static`` call (the sensitivity analysis quantizes the model once per layer).

    Batches are fed one per ``collect_data`` call so the histogram methods merge as they go
    instead of holding every activation of every image in memory.
    """
    import contextlib
    import io

    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[settings.method]
    # Percentile defaults to ranges symmetric around 0, which wastes half of a uint8 range on
    # ReLU6/SiLU outputs that are almost all positive.
    options = {"symmetric": False} if settings.method != "minmax" else {}
    input_name = _session(model_path, optimize=False).get_inputs()[0].name
    starts = range(0, len(inputs), batch_size)
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(model_path, list(settings.op_types),
                                       augmented_model_path=str(cache.with_suffix(".augmented.onnx")),
                                       calibrate_method=method, extra_options=options)
        for start in _bar(starts, f"calibrating ({settings.method})", "batch", progress):
            calibrator.collect_data(_Batches(input_name, [inputs[start : start + batch_size]]))
        save_tensors_data(calibrator.compute_data(), cache)
    cache.with_suffix(".augmented.onnx").unlink(missing_ok=True)


def quantize_model(model_path: Path, output: Path, cache: Path, settings: Settings, *,
                   nodes_to_quantize: Sequence[str] | None = None, nodes_to_exclude: Sequence[str] = (),
                   overrides: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """One ``quantize_static`` call with effnet's recipe and the cached activation ranges.

    ``overrides``: ``weight_overrides`` of the model, when the caller already has them (they
    depend only on the weights, which every graph of one ``quantize`` run shares).
    """
    import logging

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[settings.method]
    if overrides is None:
        overrides = weight_overrides(_load(model_path), settings)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(model_path), str(output), None, quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=method,
            op_types_to_quantize=list(settings.op_types), nodes_to_quantize=list(nodes_to_quantize or []),
            nodes_to_exclude=list(nodes_to_exclude), calibration_cache_path=str(cache),
            extra_options={"TensorQuantOverrides": overrides} if overrides else {},
        )
    finally:
        root.setLevel(level)


def weight_overrides(model: Any, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` giving the GEMM layers' weights their ``settings.gemm_weights`` kind."""
    from onnx import numpy_helper
    from onnxruntime.quantization import QuantType

    names = gemm_weight_names(model)
    axis = {"axis": 0} if settings.per_channel else {}
    if settings.gemm_weights == "s8-safe":
        overrides = {}
        for init in model.graph.initializer:
            if init.name in names:
                scales = pair_safe_scales(numpy_helper.to_array(init))
                scales = scales if settings.per_channel else scales.max(keepdims=True)
                overrides[init.name] = [{**axis, "scale": scale, "zero_point": np.int8(0)} for scale in scales]
        return overrides
    override = {"s8": {}, "s7": {"reduce_range": True},
                "u8": {"quant_type": QuantType.QUInt8, "symmetric": True}}[settings.gemm_weights]
    return {name: [{**axis, **override}] for name in names} if override else {}


def _load(path: Path) -> Any:
    import onnx

    return onnx.load(str(path))


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Mean squared logits error over the logits' variance: 0 is exact, 1 is noise."""
    return float(np.mean((actual - expected) ** 2) / max(float(np.var(expected)), 1e-12))


def sensitivity(graph_for: Callable[[Layer], Path], workdir: Path, cache: Path, settings: Settings,
                layers: list[Layer], inputs: np.ndarray, reference: np.ndarray, progress: bool = False,
                overrides: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Each layer quantized alone (int8 kernels as deployed): the logits error it causes.

    ``graph_for(layer)``: the float graph to quantize for that layer (with bias correction on
    that layer only: corrections elsewhere would be errors when those layers stay float).
    """
    probe = workdir / "probe.onnx"
    for layer in _bar(layers, "sensitivity per layer", "layer", progress):
        quantize_model(graph_for(layer), probe, cache, settings, nodes_to_quantize=layer.nodes, overrides=overrides)
        layer.error = relative_error(run_batches(_session(probe), inputs), reference)
    probe.unlink(missing_ok=True)


# -- measuring ----------------------------------------------------------------------------
def measure_speed(paths: Sequence[Path], image: np.ndarray, threads: int | None, rounds: int = 3,
                  batch_size: int = 16) -> list[dict[str, float]]:
    """Batch-1 latency (median ms) and batch-``batch_size`` throughput (images/s) per model.

    The models are timed in interleaved rounds so that load from other processes hits all of
    them alike, with one session alive at a time: an idle session's threads keep spinning
    after its last run and took half the CPU from the next model (Lite0 int8 at batch 1
    measured 7.6 ms right after an fp32 run, 3.9 ms alone). ``image``: one preprocessed
    input, repeated for the batch.
    """
    import gc

    single = np.ascontiguousarray(image[None])
    batch = np.repeat(single, batch_size, axis=0)
    latencies: list[list[float]] = [[] for _ in paths]
    batch_times: list[list[float]] = [[] for _ in paths]
    for _ in range(rounds):
        for index, path in enumerate(paths):
            session = _session(path, threads)
            name = session.get_inputs()[0].name
            session.run(None, {name: single})
            session.run(None, {name: batch})
            for _ in range(10):
                started = time.perf_counter()
                session.run(None, {name: single})
                latencies[index].append(time.perf_counter() - started)
            for _ in range(2):
                started = time.perf_counter()
                session.run(None, {name: batch})
                batch_times[index].append(time.perf_counter() - started)
            del session
            gc.collect()
    return [{"latency_bs1_ms": 1000 * float(np.median(lat)),
             f"throughput_bs{batch_size}_img_s": batch_size / float(np.median(times))}
            for lat, times in zip(latencies, batch_times)]


def load_eval_set(folder: str | os.PathLike, labels_file: str | os.PathLike | None, num_classes: int,
                  class_names: Sequence[str]) -> tuple[list[Path], list[tuple[int, ...]] | None]:
    """Images for the fp32 vs int8 comparison, and their labels when known.

    ``labels_file``: ``filename label[,label]`` lines (effnet eval's format); otherwise class
    sub-folders give labels (an ImageFolder tree), and a flat folder gives agreement only.
    """
    from ..data.datasets import DatasetError, LabelResolver, parse_label_file, scan_image_folder

    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizeError(f"{folder}: evaluation folder not found")
    resolver = LabelResolver(num_classes=num_classes, class_names=class_names)
    try:
        if labels_file is not None:
            samples = parse_label_file(folder, labels_file, resolver)
            return [path for path, _ in samples], [labels for _, labels in samples]
        if any(p.is_dir() for p in folder.iterdir()):
            pairs = scan_image_folder(folder, resolver)
            return [path for path, _ in pairs], [(label,) for _, label in pairs]
    except DatasetError as error:
        raise QuantizeError(str(error)) from None
    paths = find_images(folder)
    if not paths:
        raise QuantizeError(f"{folder}: no images in the evaluation folder")
    return paths, None


def within_float_budget(kept: Sequence[Layer], layers: Sequence[Layer]) -> bool:
    """Whether ``kept`` float layers hold at most ``AUTO_FLOAT_MACS`` of the multiply-adds
    (speed) and of the weights (file size)."""
    for key in ("macs", "weights"):
        if sum(getattr(layer, key) for layer in kept) > AUTO_FLOAT_MACS * sum(getattr(layer, key) for layer in layers):
            return False
    return True


# -- the task -----------------------------------------------------------------------------
@dataclass
class QuantizeResult:
    path: Path
    report: dict[str, Any]
    layers: list[Layer] = field(default_factory=list)


def quantize(
    model: str | os.PathLike,
    calib: str | os.PathLike,
    output: str | os.PathLike,
    *,
    num_images: int = 1000,
    method: str = "percentile",
    per_channel: bool = True,
    keep_float: int | str = "auto",
    gemm_weights: str = "auto",
    bias_correction: bool = True,
    op_types: Sequence[str] = QUANTIZED_OPS,
    size: int | None = None,
    eval_dir: str | os.PathLike | None = None,
    eval_labels: str | os.PathLike | None = None,
    threads: int | None = None,
    speed: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize ``model`` to ``output`` (written only when everything succeeded) and report.

    ``keep_float``: how many of the most sensitive layers stay float, or ``"auto"``: the count
    (0 to ``AUTO_MAX_FLOAT``, within ``AUTO_FLOAT_MACS`` of the multiply-adds and weights) whose int8 model
    is closest to float on the sensitivity images.
    ``gemm_weights``: a ``WEIGHT_KINDS`` entry for GEMM-backed layers; ``"auto"``: ``s8`` on
    CPUs with VNNI, ``AVX2_GEMM_WEIGHTS`` on those without.
    ``op_types``: ops that get int8 inputs/outputs (the SiLU/SE ops stay float by default).
    ``size``: the input size the int8 file is built for (default: the preprocessing's).
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    import onnxruntime

    say = log or (lambda message: None)
    onnxruntime.set_default_logger_severity(3)  # the quantizer's sessions warn about every pruned initializer
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {method}")
    if num_images < 1:
        raise UsageError("--num-images must be at least 1")
    if gemm_weights != "auto" and gemm_weights not in WEIGHT_KINDS:
        raise UsageError(f"--gemm-weights must be auto or one of {', '.join(WEIGHT_KINDS)}, not {gemm_weights}")
    started = time.perf_counter()
    model, output = Path(model), Path(output)
    float_model, metadata = load_float_model(model)
    if "preprocessing" not in metadata:
        raise QuantizeError(f"{model}: no effnet preprocessing metadata; export the model with `effnet export`")
    preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
    if size is not None:
        if size < 8:
            raise UsageError("--size must be at least 8")
        preprocessing = preprocessing.with_size(size)
        metadata = {**metadata, "preprocessing": preprocessing.to_dict()}
    if eval_dir is not None:  # a bad evaluation set fails now, not after the calibration
        from ..data.labels import resolve_labels

        num_classes = int(metadata.get("num_classes", 1000))
        names = resolve_labels(metadata.get("labels", "imagenet1k"), num_classes)
        load_eval_set(eval_dir, eval_labels, num_classes, names)
    paths = select_images(calib, num_images)
    crops, used, failures = load_crops(paths, preprocessing, progress=progress)
    say(f"calibration: {len(used)} images from {calib}" + (f", {len(failures)} unreadable skipped" if failures else ""))
    inputs = normalize(crops, preprocessing)
    vnni = cpu_has_vnni()
    settings = Settings(method=method, per_channel=per_channel,
                        gemm_weights=("s8" if vnni else AVX2_GEMM_WEIGHTS) if gemm_weights == "auto" else gemm_weights,
                        bias_correction=bias_correction, op_types=tuple(op_types))
    probe_count = min(SENSITIVITY_IMAGES, len(inputs))
    probe_inputs = inputs[np.linspace(0, len(inputs) - 1, probe_count).round().astype(int)]

    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as temporary:
        work = Path(temporary)
        onnx.save(fix_input_size(prepare_graph(float_model), preprocessing.size), str(work / "graph.onnx"))
        try:
            quant_pre_process(str(work / "graph.onnx"), str(work / "prepared.onnx"))
        except Exception as exc:  # shape inference failures come as many exception types
            raise QuantizeError(f"{model}: cannot prepare the graph for quantization ({str(exc).strip()[:200]})") \
                from None
        prepared_path = work / "prepared.onnx"
        prepared = _load(prepared_path)
        initializers = {init.name: init for init in prepared.graph.initializer}
        nodes = {node.name: node for node in prepared.graph.node}
        macs = layer_macs(prepared)
        layers = [Layer(*describe_layer(nodes[group[0]], initializers), group, macs.get(group[0], 0),
                        int(np.prod(initializers[nodes[group[0]].input[1]].dims))
                        if nodes[group[0]].input[1] in initializers else 0)
                  for group in layer_groups(prepared)]
        kinds = {name: settings.gemm_weights for name in gemm_weight_names(prepared)}
        input_name = prepared.graph.input[0].name
        means = conv_input_means(prepared, iter([inputs[i : i + 16] for i in range(0, len(inputs), 16)]),
                                 input_name) if bias_correction else {}

        all_nodes = {name for layer in layers for name in layer.nodes}

        def corrected(kept: set[str]) -> Path:
            """The prepared graph with bias correction on every layer not in ``kept`` (float)."""
            if not bias_correction:
                return prepared_path
            graph = onnx.ModelProto()
            graph.CopyFrom(prepared)
            correct_biases(graph, means, kinds, kept)
            path = work / "corrected.onnx"
            onnx.save(graph, str(path))
            return path

        cache = work / "ranges.json"
        calibrate(corrected(set()), inputs, settings, cache, progress=progress)
        reference = run_batches(_session(prepared_path), probe_inputs)
        overrides = weight_overrides(prepared, settings)  # bias correction leaves the weights alone
        sensitivity(lambda layer: corrected(all_nodes - set(layer.nodes)), work, cache, settings, layers,
                    probe_inputs, reference, progress=progress, overrides=overrides)
        ranked = sorted(layers, key=lambda layer: -layer.error)
        if keep_float == "auto":  # the most sensitive layers that fit the budget, in order
            order: list[Layer] = []
            for layer in ranked:
                if len(order) < AUTO_MAX_FLOAT and within_float_budget([*order, layer], layers):
                    order.append(layer)
            candidates = list(range(len(order) + 1))
        else:
            order = ranked
            candidates = [min(int(keep_float), len(ranked))]
        trials: list[tuple[int, float]] = []
        for count in _bar(candidates, "choosing float layers", "try", progress and len(candidates) > 1):
            kept_nodes = {n for layer in order[:count] for n in layer.nodes}
            trial = work / f"int8_{count}.onnx"
            quantize_model(corrected(kept_nodes), trial, cache, settings, nodes_to_exclude=sorted(kept_nodes),
                           overrides=overrides)
            trials.append((count, relative_error(run_batches(_session(trial), probe_inputs), reference)))
        best = min(error for _, error in trials)
        count = next(count for count, error in trials if error <= AUTO_TOLERANCE * best)
        for layer in order[:count]:
            layer.kept_float = True
        quantized_path = work / f"int8_{count}.onnx"
        quantized = _load(quantized_path)
        final_metadata = {**metadata, "quantization": {
            "format": "QDQ", "activations": "uint8",
            "weights": "int8 per-channel" if per_channel else "int8 per-tensor",
            "method": method, "calibration_images": len(used), "gemm_weights": settings.gemm_weights,
            "bias_correction": bias_correction, "float_layers": [layer.name for layer in order[:count]],
            "source": model.name, "input_size": preprocessing.size,
        }}
        del quantized.metadata_props[:]
        from onnx import helper

        helper.set_model_props(quantized, encode_metadata(final_metadata))
        quantized.producer_name = "effnet"
        with staged(output) as staged_path:  # renamed to output once it loads and is measured
            onnx.save(quantized, staged_path)
            open_session(staged_path)
            report = build_report(model, staged_path, metadata, eval_dir, eval_labels, inputs, threads, speed,
                                  progress, say, fp32_timed=work / "graph.onnx")
    report.update({
        "model": str(model), "output": str(output), "arch": metadata.get("arch", "unknown"),
        "settings": {**asdict(settings), "op_types": list(settings.op_types), "cpu_vnni": vnni},
        "calibration": {"folder": str(calib), "images": len(used), "skipped": len(failures),
                        "skipped_files": failures},
        "keep_float": {"requested": keep_float, "chosen": count,
                       "trials": [{"float_layers": c, "relative_error": e} for c, e in trials]},
        "float_layers": [layer.name for layer in order[:count]],
        "sensitivity": [{"layer": layer.name, "kind": layer.kind, "relative_error": layer.error, "macs": layer.macs,
                         "weights": layer.weights, "kept_float": layer.kept_float} for layer in ranked],
        "seconds": time.perf_counter() - started,
    })
    report["int8_ops"] = int8_op_counts(output)
    return QuantizeResult(output, report, layers)


def int8_op_counts(path: Path) -> dict[str, int]:
    """Op types in the graph onnxruntime actually runs (after its QDQ fusions), counted."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="effnet-optimized-") as temporary:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.optimized_model_filepath = str(Path(temporary) / "optimized.onnx")
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def build_report(model: Path, quantized: Path, metadata: dict[str, Any], eval_dir: Any, eval_labels: Any,
                 calibration_inputs: np.ndarray, threads: int | None, speed: bool, progress: bool,
                 say: Callable[[str], None], fp32_timed: Path | None = None) -> dict[str, Any]:
    """fp32 vs int8: top-1 agreement, accuracy when labelled, size, latency and throughput.

    ``fp32_timed``: the float graph to time, when not ``model`` itself: the float model pinned
    to the int8 file's input size, so the speedup compares like with like (a dynamic-size
    export is itself 1.3-1.5x slower than a fixed-size one, benchmarks/onnx_fixed_size.py).
    """
    from ..data.labels import resolve_labels

    preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
    num_classes = int(metadata.get("num_classes", 1000))
    labels = None
    if eval_dir is not None:
        names = resolve_labels(metadata.get("labels", "imagenet1k"), num_classes)
        paths, labels = load_eval_set(eval_dir, eval_labels, num_classes, names)
        crops, used, failures = load_crops(paths, preprocessing, role="evaluation", progress=progress)
        if labels is not None:
            kept = set(used)
            labels = [label for path, label in zip(paths, labels) if path in kept]
        inputs, source = normalize(crops, preprocessing), str(eval_dir)
        skipped = len(failures)
    else:
        inputs, source, skipped = calibration_inputs, "calibration images", 0
    say(f"comparing fp32 and int8 on {len(inputs)} images ...")
    fp32 = run_batches(_session(model, threads), inputs)
    int8 = run_batches(_session(quantized, threads), inputs)
    report: dict[str, Any] = {
        "compared_on": source, "images": len(inputs), "skipped": skipped,
        "top1_agreement": float(np.mean(fp32.argmax(1) == int8.argmax(1))),
        "relative_logits_error": relative_error(int8, fp32),
        "size_mb": {"fp32": model.stat().st_size / 1e6, "int8": quantized.stat().st_size / 1e6},
    }
    if labels is not None:
        report["accuracy"] = {
            name: float(np.mean([pred in label for pred, label in zip(logits.argmax(1), labels)]))
            for name, logits in (("fp32", fp32), ("int8", int8))
        }
    if speed:
        say("timing fp32 and int8 ...")
        fp32_speed, int8_speed = measure_speed([fp32_timed or model, quantized], inputs[0], threads)
        report["speed"] = {"threads": threads or "onnxruntime default", "fp32": fp32_speed, "int8": int8_speed,
                           "fp32_graph": "the float model at the int8 file's fixed input size" if fp32_timed
                           else "the float model as given",
                           "speedup": {key: (int8_speed[key] / fp32_speed[key] if "throughput" in key
                                             else fp32_speed[key] / int8_speed[key]) for key in fp32_speed}}
    return report


def markdown(report: dict[str, Any], sensitive_rows: int = 8) -> str:
    """The report as markdown tables (what ``effnet quantize`` prints)."""
    lines = [f"## {report['arch']}: fp32 vs int8 ({report['output']})", "",
             "| | fp32 | int8 | int8 vs fp32 |", "|---|---:|---:|---:|"]
    lines.append(f"| top-1 agreement ({report['images']} images: {report['compared_on']}) | | | "
                 f"{100 * report['top1_agreement']:.1f}% |")
    if "accuracy" in report:
        fp32, int8 = report["accuracy"]["fp32"], report["accuracy"]["int8"]
        lines.append(f"| top-1 accuracy | {100 * fp32:.2f}% | {100 * int8:.2f}% | {100 * (int8 - fp32):+.2f} pt |")
    size = report["size_mb"]
    lines.append(f"| model size | {size['fp32']:.1f} MB | {size['int8']:.1f} MB | "
                 f"{size['fp32'] / size['int8']:.2f}x smaller |")
    if "speed" in report:
        speed = report["speed"]
        for key, label, unit in (("latency_bs1_ms", "latency batch 1", "ms"),
                                 ("throughput_bs16_img_s", "throughput batch 16", "img/s")):
            lines.append(f"| {label} ({speed['threads']} threads) | {speed['fp32'][key]:.1f} {unit} | "
                         f"{speed['int8'][key]:.1f} {unit} | {speed['speedup'][key]:.2f}x speed |")
        if "fp32_graph" in speed:
            lines += ["", f"Speed: fp32 is {speed['fp32_graph']}."]
    lines += ["", f"Sensitivity (logits error with only that layer int8, relative to the logits' variance); "
              f"{report['keep_float']['chosen']} kept float:", "",
              "| layer | kind | relative error | runs |", "|---|---|---:|---|"]
    for row in report["sensitivity"][:sensitive_rows]:
        lines.append(f"| {row['layer']} | {row['kind']} | {row['relative_error']:.4f} | "
                     f"{'float' if row['kept_float'] else 'int8'} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="float ONNX file from `effnet export` (its metadata gives the preprocessing)")
    parser.add_argument("--calib", required=True, metavar="DIR",
                        help="folder of calibration images (searched recursively; unreadable files are skipped)")
    parser.add_argument("--output", "-o", required=True, help="the int8 .onnx file to write")
    parser.add_argument("--num-images", type=int, default=1000,
                        help="calibration images, spread over the folder (default: 1000, or all there are)")
    parser.add_argument("--method", choices=METHODS, default="percentile",
                        help="activation range calibration (default: percentile, the 99.999th; minmax and "
                             "entropy agreed less with fp32 on Lite0)")
    parser.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=True,
                        help="one weight scale per output channel (default: on)")
    parser.add_argument("--keep-float", type=keyword_or_int("auto", 0, "auto"), default="auto", metavar="K|auto",
                        help=f"keep the K most sensitive layers float; auto: 0-{AUTO_MAX_FLOAT} layers holding at "
                             f"most {100 * AUTO_FLOAT_MACS:g}%% of the multiply-adds and of the weights, whichever "
                             "count is closest to float (default: auto)")
    parser.add_argument("--gemm-weights", choices=("auto",) + WEIGHT_KINDS, default="auto",
                        help="weights of the GEMM layers (1x1/full convs, classifier): s8 8-bit, s7 7-bit, "
                             "u8 uint8 (slow u8u8 kernels), s8-safe 8-bit scaled so onnxruntime's AVX2 kernels "
                             "cannot saturate (default: auto: s8 with VNNI, s8-safe without)")
    parser.add_argument("--size", type=int, default=None,
                        help="input height and width the int8 file is built for (it is fixed there; "
                             "default: the model's preprocessing size)")
    parser.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=True,
                        help="fold the mean error of weight rounding into the biases (default: on)")
    parser.add_argument("--eval", metavar="DIR", default=None,
                        help="images to compare fp32 and int8 on: class sub-folders or --eval-labels give "
                             "accuracy, a flat folder agreement only (default: the calibration images)")
    parser.add_argument("--eval-labels", metavar="FILE", default=None,
                        help="`filename label[,label]` lines for the --eval images (effnet eval's format)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime threads for the timing (default: onnxruntime's, one per core)")
    parser.add_argument("--no-speed", action="store_true", help="skip the latency/throughput measurement")
    parser.add_argument("--report", default=None, metavar="FILE",
                        help="JSON report (default: the output with .json instead of .onnx)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise UsageError(f"--output should end in .onnx: {output}")
    if args.eval_labels and not args.eval:
        raise UsageError("--eval-labels needs --eval DIR")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    result = quantize(
        args.model, args.calib, output, num_images=args.num_images, method=args.method, per_channel=args.per_channel,
        keep_float=args.keep_float, gemm_weights=args.gemm_weights,
        bias_correction=args.bias_correction, size=args.size, eval_dir=args.eval, eval_labels=args.eval_labels,
        threads=args.threads, speed=not args.no_speed, progress=not args.no_progress and sys.stderr.isatty(),
        log=lambda message: print(message, file=sys.stderr),
    )
    report_path = Path(args.report) if args.report else output.with_suffix(".json")
    with staged(report_path) as temporary:
        temporary.write_text(json.dumps(result.report, indent=2))
    print(markdown(result.report))
    print(f"\nwrote {output} and {report_path}")
    return 0
