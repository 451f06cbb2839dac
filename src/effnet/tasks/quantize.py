"""``effnet quantize``: static int8 post-training quantization that stays fast and accurate.

The recipe, and why (measured with ``benchmarks/quantize_bench.py``, see docs/deploy.md):

- QDQ format, uint8 activations and int8 per-channel weights: the one combination with fast
  onnxruntime kernels on x86 (int8 activations or uint8 weights take generic paths that run
  5-15x slower than float here).
- On x86 CPUs without VNNI, onnxruntime multiplies uint8 x int8 pairs with ``vpmaddubsw``,
  whose 16-bit sums saturate: full 8-bit weights then corrupt 1x1 convolutions. The weights
  of every GEMM-backed layer (regular and 1x1 convs, the classifier) get a 7-bit range
  there (``--reduce-range auto``); depthwise convs run in another kernel and keep 8 bits.
- SiLU (``Sigmoid`` + ``Mul``) and squeeze-excitation stay float: onnxruntime has no fused
  int8 SiLU, so quantizing them replaces one fused float op by three int8 ones with
  requantization between, and the SE ``ReduceMean`` has no int8 kernel at all.
- Sensitivity analysis: every layer (a conv or the classifier with its activation) is
  quantized alone and the error it adds to the logits is measured; the few most sensitive
  stay float (``--keep-float``).

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

from ..data.images import ImageError, find_images, load_image
from ..data.transforms import Preprocessing
from ..errors import EffnetError, UsageError
from ..runtime.onnx_backend import INPUT_FLOAT, OnnxModelError, encode_metadata, open_session, read_metadata

DESCRIPTION = (
    "Quantize an exported ONNX model to int8 (static, per-channel weights) with calibration images, "
    "keep the most sensitive layers float, and report fp32 vs int8 agreement, accuracy, size and speed."
)

METHODS = ("minmax", "percentile", "entropy")
#: Opsets onnxruntime's QDQ quantizer handles with per-channel weights (axis on DequantizeLinear).
MIN_OPSET, MAX_OPSET = 13, 23
#: Ops quantized by default; ``Clip``/``Relu`` are folded into the preceding conv's range.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Clip", "Relu", "GlobalAveragePool")
FLOAT_OPS = ("Sigmoid", "Mul", "ReduceMean")
SENSITIVITY_IMAGES = 16


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
               progress: Callable[[Iterator[Path], int, str], Iterator[Path]] | None = None) -> np.ndarray:
    """Decode and resize/crop every image (uint8, N x S x S x 3); any unreadable file is an error."""
    crops, failures = [], []
    iterator = progress(iter(paths), len(paths), f"reading {role} images") if progress else paths
    for path in iterator:
        try:
            crops.append(preprocessing.resize_crop(load_image(path)))
        except ImageError as error:
            failures.append(error)
    if failures:
        listed = "; ".join(str(f) for f in failures[:3]) + (f" (+{len(failures) - 3} more)" if len(failures) > 3 else "")
        raise QuantizeError(f"{len(failures)} of {len(paths)} {role} images cannot be used: {listed}")
    return np.stack(crops)


def normalize(crops: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    return np.stack([preprocessing.normalize(c) for c in crops])


# -- graph preparation --------------------------------------------------------------------
def prepare_graph(model: Any) -> Any:
    """Rewrite spatial means as ``GlobalAveragePool`` (same values): ``ReduceMean`` has no int8
    kernel in onnxruntime, and a float op in the middle of an int8 graph costs a dequantize
    and a quantize of the whole feature map."""
    from onnx import helper, numpy_helper

    constants = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type != "ReduceMean":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            axes = constants.get(node.input[1])
        if axes is None or sorted(int(a) for a in np.ravel(axes)) != [2, 3] or not attrs.get("keepdims", 1):
            continue
        node.op_type = "GlobalAveragePool"
        del node.input[1:]
        del node.attribute[:]
    return model


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


def quantized_weight(weight: np.ndarray, reduce_range: bool) -> np.ndarray:
    """The weight as onnxruntime will store it: per output channel, symmetric int8 (7-bit
    range with ``reduce_range``), dequantized back to float."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.INT8, reduce_range=reduce_range, symmetric=True)
    flat = weight.reshape(weight.shape[0], -1).astype(np.float32)
    out = np.empty_like(flat)
    for row, values in enumerate(flat):
        zero_point, scale = compute_scale_zp(values.min(), values.max(), qmin, qmax, symmetric=True)
        scale = np.float32(scale)
        out[row] = (np.clip(np.round(values / scale) + zero_point, qmin, qmax) - zero_point) * scale
    return out.reshape(weight.shape)


def correct_biases(model: Any, means: dict[str, np.ndarray], reduced: set[str], keep_float: set[str]) -> int:
    """Fold the mean output error of weight rounding back into each layer's bias.

    Rounding per-channel weights shifts every output channel's mean by
    ``(W_int8 - W) @ E[x]``; subtracting that from the bias (Nagel et al. 2019, "Data-Free
    Quantization", empirical bias correction) removes most of the weight error in depthwise
    layers, where 9 or 25 weights per channel make the shift large. ``reduced``: weights that
    will get the 7-bit range; ``keep_float``: nodes that stay float (left alone). Returns how
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
        error = quantized_weight(weight, node.input[1] in reduced) - weight
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


def gemm_weights(model: Any) -> set[str]:
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
