"""Weights in int8: per-channel scales the kernels cannot saturate, bias correction, and the
one ``quantize_static`` call that applies them with the calibrated activation ranges."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType

from .recipe import AUTO_GEMM_WEIGHTS, BATCH_SIZE, Settings

CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                       "entropy": CalibrationMethod.Entropy}


# -- weight scales ------------------------------------------------------------------------
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
    """Whether onnxruntime's int8 GEMM can use VNNI (no 16-bit saturation) on this CPU (the
    report says where a file was built; the weights no longer depend on it)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def gemm_weights_for(requested: str) -> str:
    """The GEMM weight kind a run uses: ``requested``, or ``AUTO_GEMM_WEIGHTS`` for ``auto``
    (whatever CPU quantizes: the file must not saturate on the CPU that runs it)."""
    return AUTO_GEMM_WEIGHTS if requested == "auto" else requested


def weight_overrides(model: Any, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """``TensorQuantOverrides`` giving the GEMM layers' weights their ``settings.gemm_weights`` kind."""
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


def quantize_model(model_path: Path, output: Path, cache: Path, settings: Settings, *,
                   nodes_to_quantize: Sequence[str] | None = None, nodes_to_exclude: Sequence[str] = (),
                   overrides: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """One ``quantize_static`` call with effnet's recipe and the cached activation ranges.

    ``overrides``: ``weight_overrides`` of the model, when the caller already has them (they
    depend only on the weights, which every graph of one ``quantize`` run shares).
    """
    if overrides is None:
        overrides = weight_overrides(onnx.load(str(model_path)), settings)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(
            str(model_path), str(output), None, quant_format=QuantFormat.QDQ, per_channel=settings.per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CALIBRATION_METHODS[settings.method],
            op_types_to_quantize=list(settings.op_types), nodes_to_quantize=list(nodes_to_quantize or []),
            nodes_to_exclude=list(nodes_to_exclude), calibration_cache_path=str(cache),
            extra_options={"TensorQuantOverrides": overrides} if overrides else {},
        )
    finally:
        root.setLevel(level)


# -- bias correction ----------------------------------------------------------------------
def conv_input_means(model: Any, batches: Iterator[np.ndarray], input_name: str) -> dict[str, np.ndarray]:
    """Per-channel mean of every conv/Gemm input over the calibration images (one float run)."""
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


def correct_biases(model: Any, means: dict[str, np.ndarray], kinds: dict[str, str], keep_float: set[str]) -> int:
    """Fold the mean output error of weight rounding back into each layer's bias.

    Rounding per-channel weights shifts every output channel's mean by
    ``(W_int8 - W) @ E[x]``; subtracting that from the bias (Nagel et al. 2019, "Data-Free
    Quantization", empirical bias correction) removes most of the weight error in depthwise
    layers, where 9 or 25 weights per channel make the shift large. ``kinds``: weight name ->
    its ``WEIGHT_KINDS`` entry (``s8`` when absent); ``keep_float``: nodes that stay float
    (left alone). Returns how many layers were corrected.
    """
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


@dataclass
class CorrectedGraphs:
    """The prepared graph with bias correction on every layer but those kept float, written on
    demand: each quantization of a run starts from one (a correction on a layer that stays
    float would be an error of its own)."""

    prepared: Any
    prepared_path: Path
    #: ``conv_input_means`` of the prepared graph; empty when bias correction is off
    means: dict[str, np.ndarray]
    #: weight name -> its ``WEIGHT_KINDS`` entry
    kinds: dict[str, str]
    work: Path

    @classmethod
    def measure(cls, prepared: Any, prepared_path: Path, inputs: np.ndarray, settings: Settings,
                work: Path) -> "CorrectedGraphs":
        """Measure the layers' input means once (one float run over ``inputs``)."""
        means = {}
        if settings.bias_correction:
            batches = iter([inputs[i : i + BATCH_SIZE] for i in range(0, len(inputs), BATCH_SIZE)])
            means = conv_input_means(prepared, batches, prepared.graph.input[0].name)
        kinds = {name: settings.gemm_weights for name in gemm_weight_names(prepared)}
        return cls(prepared, prepared_path, means, kinds, work)

    def __call__(self, kept_float: set[str]) -> Path:
        """The graph to quantize when the nodes ``kept_float`` stay float."""
        if not self.means:
            return self.prepared_path
        graph = onnx.ModelProto()
        graph.CopyFrom(self.prepared)
        correct_biases(graph, self.means, self.kinds, kept_float)
        path = self.work / "corrected.onnx"
        onnx.save(graph, str(path))
        return path
