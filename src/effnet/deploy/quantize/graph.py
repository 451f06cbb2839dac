"""The float graph: read and check it, prepare it for int8, and name its layers.

Preparing means two rewrites that keep the values and let more of the graph run in int8
(``prepare_graph``: spatial means as pooling; ``fix_input_size``: the size pinned so
TF-"same" pads fold away), then onnxruntime's own pre-processing (shape inference).
Layers are what the sensitivity analysis measures and ``--keep-float`` keeps: a conv or the
classifier with the activation fused into it, named by its torch module path.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxscript import optimizer

from ...runtime.onnx_metadata import INPUT_FLOAT, decode
from .recipe import MAX_OPSET, MIN_OPSET, QuantizeError


def load_float_model(path: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """The ONNX model and its effnet metadata, or a one-line error saying what is wrong."""
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
    metadata = decode({p.key: p.value for p in model.metadata_props})
    if metadata.get("input", INPUT_FLOAT) != INPUT_FLOAT:
        raise QuantizeError(f"{path}: has preprocessing inside (uint8 input); quantize a float-input export "
                            "(effnet export without --with-preprocessing)")
    if len(model.graph.input) != 1:
        raise QuantizeError(f"{path}: expected one image input, found {len(model.graph.input)}")
    return model, metadata


def prepared_graph(float_model: Any, size: int, work: Path, source: Path) -> tuple[Path, Any]:
    """The float model as every quantization of the run starts from: rewritten, pinned to
    ``size``, through onnxruntime's pre-processing; saved in ``work`` (and loaded)."""
    fixed, prepared = work / "graph.onnx", work / "prepared.onnx"
    onnx.save(fix_input_size(prepare_graph(float_model), size), str(fixed))
    try:
        quant_pre_process(str(fixed), str(prepared))
    except Exception as exc:  # shape inference failures come as many exception types
        raise QuantizeError(f"{source}: cannot prepare the graph for quantization ({str(exc).strip()[:200]})") \
            from None
    return prepared, onnx.load(str(prepared))


def prepare_graph(model: Any) -> Any:
    """Rewrite spatial means as ``GlobalAveragePool`` (same values; ``Flatten`` after it when
    the mean drops the spatial axes): ``ReduceMean`` has no int8 kernel in onnxruntime, and a
    float op in the middle of an int8 graph costs a dequantize and a quantize of its input."""
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


def find_layers(model: Any) -> list[Layer]:
    """Every quantizable layer of a prepared graph, with its multiply-adds and weight count."""
    initializers = {init.name: init for init in model.graph.initializer}
    nodes = {node.name: node for node in model.graph.node}
    macs = layer_macs(model)
    layers = []
    for group in layer_groups(model):
        first = nodes[group[0]]
        weights = int(np.prod(initializers[first.input[1]].dims)) if first.input[1] in initializers else 0
        layers.append(Layer(*describe_layer(first, initializers), group, macs.get(group[0], 0), weights))
    return layers


def requantized_by_onnxruntime(model: Any, float_nodes: set[str]) -> list[str]:
    """The nodes of a QDQ graph meant to stay float that onnxruntime will run in int8 anyway.

    onnxruntime's ``WeightBiasQuantization`` transformer (basic optimization level, so on in
    every session) takes a ``Conv``/``Gemm`` with float weights whose input comes from a
    per-tensor ``DequantizeLinear`` and whose output reaches a ``QuantizeLinear`` through
    ``Relu``/``Clip`` only, and quantizes its weights to int8 with **one scale for the whole
    tensor**, then fuses it into a ``QLinearConv``. A layer "kept float" between two int8
    layers is exactly that, so it ran with per-tensor weights and no bias correction: far
    worse than int8 with our per-channel weights. On Lite0 keeping ``blocks.1.0.conv_dw``
    float raised the logits error from 0.0037 to 0.060 (its emulated QDQ graph: 0.0037),
    and keeping the first depthwise conv float without the stem was the issue's 0.23.
    This mirrors the transformer's conditions (onnxruntime
    ``core/optimizer/qdq_transformer/weight_bias_quantization.cc``) on the graph as written.
    """
    producers = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {init.name: init for init in model.graph.initializer}

    def scalar(name: str) -> bool:
        return name in initializers and int(np.prod(initializers[name].dims)) == 1

    def reaches_quantize(node: Any) -> bool:
        while len(node.output) == 1 and len(consumers.get(node.output[0], [])) == 1:
            node = consumers[node.output[0]][0]
            if node.op_type == "QuantizeLinear":
                return True
            if node.op_type not in ("Relu", "Clip"):
                return False
        return False

    requantized = []
    for node in model.graph.node:
        if node.name not in float_nodes or node.op_type not in ("Conv", "ConvTranspose", "Gemm"):
            continue
        weight = initializers.get(node.input[1])
        source = producers.get(node.input[0])
        if (weight is not None and weight.data_type == onnx.TensorProto.FLOAT and source is not None
                and source.op_type == "DequantizeLinear" and scalar(source.input[1]) and reaches_quantize(node)):
            requantized.append(node.name)
    return requantized


def neighbour_layers(model: Any, layers: list[Layer]) -> dict[str, list[Layer]]:
    """Layer name -> the layer whose output it reads directly (the stem for the first
    depthwise conv), then the layers that read its output directly.

    A layer between two int8 ones cannot stay float in onnxruntime
    (``requantized_by_onnxruntime``), but it can together with a neighbour: the one that
    feeds it (its input is then float) or one that reads it (its output is then not quantized).
    """
    owner = {node: layer for layer in layers for node in layer.nodes}
    producers = {output: node.name for node in model.graph.node for output in node.output}
    inputs = {node.name: node.input[0] for node in model.graph.node}
    neighbours: dict[str, list[Layer]] = {layer.name: [] for layer in layers}
    for layer in layers:
        source = owner.get(producers.get(inputs[layer.nodes[0]], ""))
        if source is not None and source is not layer:
            neighbours[layer.name].insert(0, source)
            neighbours[source.name].append(layer)
    return neighbours
