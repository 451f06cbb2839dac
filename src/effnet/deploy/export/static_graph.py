"""Static ONNX graphs for NPU compilers, TensorRT and OpenVINO: opsets 11-23, one fixed size.

Vendor compilers (RDK X5's hb_mapper lists opsets 10-11, VastAI's vamc, older TensorRT) take
a graph whose every shape is known and whose convolutions carry their own padding. torch's
dynamo exporter starts at opset 18 and writes TF "same" padding as shape arithmetic feeding
``Pad``; here the TorchScript exporter (``dynamo=False``, opsets 7+) runs on a copy of the
network whose same-padded convolutions are frozen at the fixed size: each becomes one ONNX
``Conv`` with static, possibly asymmetric ``pads`` (``FrozenPadConv2d``), so the graph holds
no ``Shape``, ``Pad`` or integer arithmetic, only ``Conv`` (BatchNorm folded in), activations,
``ReduceMean`` (squeeze-excitation and pooling), ``Mul``/``Add`` and one ``Gemm``.

Before anything is written, every op is looked up in the ONNX operator schemas at the chosen
opset (``ops_missing_at``): an op newer than the opset is named in one line.
"""

from __future__ import annotations

import copy
import functools
import io
import re
from typing import Any

import onnx

from ..._quiet import quiet
from ...errors import UsageError
from .preprocessing_graph import INPUT_NAME

#: the TorchScript exporter's range that onnxruntime here also runs
MIN_OPSET, MAX_OPSET = 11, 23


def freeze_padding(net: Any, size: int) -> Any:
    """A copy of ``net`` whose TF-"same" convolutions (dynamic or static-at-nominal) pad with
    the constants they compute at a ``size`` x ``size`` input, as ``FrozenPadConv2d``.

    The pads are read by running the network once at that size (a forward hook per conv), so
    they are exactly what the torch module does at that size, for every padding convention.
    """
    import torch

    from ...models.layers import Conv2dSame, Conv2dStaticSame

    frozen = copy.deepcopy(net).cpu().eval()
    same = {name: module for name, module in frozen.named_modules()
            if isinstance(module, (Conv2dSame, Conv2dStaticSame))}
    sizes: dict[str, tuple[int, int]] = {}

    def record(name: str) -> Any:
        return lambda module, inputs, output: sizes.__setitem__(name, tuple(inputs[0].shape[-2:]))

    hooks = [module.register_forward_hook(record(name)) for name, module in same.items()]
    with torch.inference_mode():
        frozen(torch.zeros(1, 3, size, size))
    for hook in hooks:
        hook.remove()
    for name, module in same.items():
        parent = frozen.get_submodule(name.rpartition(".")[0]) if "." in name else frozen
        setattr(parent, name.rpartition(".")[2], frozen_conv_class().from_conv(module, *sizes[name]))
    return frozen


def _pads(module: Any, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) that ``module`` adds at a ``height`` x ``width`` input."""
    from ...models.layers import Conv2dStaticSame, same_padding

    totals = [same_padding(extent, k, s, d) for extent, k, s, d in
              zip((height, width), module.kernel_size, module.stride, module.dilation)]
    if isinstance(module, Conv2dStaticSame):
        top, left = module.before
    else:
        top, left = totals[0] // 2, totals[1] // 2
    return top, left, totals[0] - top, totals[1] - left


@functools.cache
def frozen_conv_class() -> type:
    """``FrozenPadConv2d``, defined on first use: importing this module needs no torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PaddedConv(torch.autograd.Function):
        """F.pad + conv2d in torch; one ``Conv`` with asymmetric ``pads`` in ONNX."""

        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    pads: tuple[int, int, int, int], stride: tuple[int, int], dilation: tuple[int, int],
                    groups: int) -> torch.Tensor:
            top, left, bottom, right = pads
            return F.conv2d(F.pad(x, [left, right, top, bottom]), weight, bias, stride, 0, dilation, groups)

        @staticmethod
        def symbolic(g: Any, x: Any, weight: Any, bias: Any, pads: tuple[int, int, int, int],
                     stride: tuple[int, int], dilation: tuple[int, int], groups: int) -> Any:
            inputs = [x, weight] + ([] if bias is None or _is_none(bias) else [bias])
            kernel = weight.type().sizes()[2:]
            return g.op("Conv", *inputs, kernel_shape_i=list(kernel), strides_i=list(stride),
                        dilations_i=list(dilation), group_i=groups, pads_i=list(pads))

    def _is_none(value: Any) -> bool:
        return value.node().mustBeNone() if hasattr(value, "node") else False

    class FrozenPadConv2d(nn.Conv2d):
        """A Conv2d with constant (top, left, bottom, right) padding, exported as one ``Conv``."""

        pads: tuple[int, int, int, int]

        @classmethod
        def from_conv(cls, conv: nn.Conv2d, height: int, width: int) -> "FrozenPadConv2d":
            pads = _pads(conv, height, width)
            if min(pads) < 0:
                raise UsageError(f"at {height}x{width} a {conv.kernel_size[0]}x{conv.kernel_size[1]} convolution "
                                 f"with stride {conv.stride[0]} would crop its input; export at a larger --size")
            frozen = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, padding=0,
                         dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)
            frozen.load_state_dict(conv.state_dict())
            frozen.pads = pads
            return frozen

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return PaddedConv.apply(x, self.weight, self.bias, self.pads, self.stride, self.dilation, self.groups)

        def extra_repr(self) -> str:
            return f"{super().extra_repr()}, pads(top, left, bottom, right)={self.pads}"

    return FrozenPadConv2d


def static_to_onnx(net: Any, batch: int | None, size: int, opset: int, output_name: str) -> Any:
    """``net`` (frozen at ``size``) as an ``onnx.ModelProto`` from the TorchScript exporter:
    fixed spatial size, batch fixed or dynamic (``None``), constants folded, BatchNorm fused."""
    import torch

    from .onnx import ExportError

    frozen = freeze_padding(net, size)
    buffer = io.BytesIO()
    dynamic = {INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}} if batch is None else None
    with quiet():  # on an unsupported op the exporter's C++ log prints the whole IR graph; the one line is raised
        try:
            torch.onnx.export(frozen, (torch.zeros(batch or 1, 3, size, size),), buffer, dynamo=False,
                              opset_version=opset, input_names=[INPUT_NAME], output_names=[output_name],
                              dynamic_axes=dynamic, do_constant_folding=True)
        except torch.onnx.errors.UnsupportedOperatorError as exc:
            raise UsageError(f"--opset {opset} is too low for {net.plan.name}: {_needs(exc)}") from None
        except Exception as exc:
            raise ExportError(f"torch.onnx.export (TorchScript) failed: {_first_line(exc)}") from exc
    model = onnx.load_from_string(buffer.getvalue())
    _drop_identities(model)
    _constants_to_initializers(model)
    _timm_node_names(model)
    missing = ops_missing_at(model, opset)
    if missing:
        raise UsageError(f"--opset {opset} is too low for {net.plan.name}: {missing[0][0]} needs opset "
                         f"{missing[0][1]} or newer")
    return model


def _needs(exc: BaseException) -> str:
    """``aten::op needs opset N or newer`` from the exporter's message (its first line otherwise)."""
    text = str(exc)
    op, version = re.search(r"operator '([^']+)'", text), re.search(r"added in version (\d+)", text)
    if op and version:
        return f"{op[1]} needs opset {version[1]} or newer"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _drop_identities(model: Any) -> None:
    """Remove ``Identity`` nodes (the exporter's leftovers of Dropout and DropPath in eval
    mode): their consumers read the identity's input instead; a graph output keeps its name."""
    graph = model.graph
    outputs = {value.name for value in graph.output}
    renames: dict[str, str] = {}
    kept = []
    for node in graph.node:
        inputs = [renames.get(name, name) for name in node.input]
        del node.input[:]
        node.input.extend(inputs)
        if node.op_type == "Identity" and node.output[0] not in outputs:
            renames[node.output[0]] = node.input[0]
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


def _constants_to_initializers(model: Any) -> None:
    """``Constant`` nodes (Clip bounds, ReduceMean axes at opset 18+) become initializers:
    some compilers read weights only from initializers."""
    graph = model.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)


_BLOCK_SCOPE = re.compile(r"^/blocks\.(\d+)\.(\d+)/")


def _timm_node_names(model: Any) -> None:
    """Node names as the TorchScript exporter gives timm's modules (``/blocks/blocks.6/
    blocks.6.0/se/Mul``): vendor configs name nodes that way (RDK X5's EfficientNet yaml sets
    int16 on ``/blocks/blocks.6/blocks.6.0/conv_dw/Conv``), so they apply to effnet's files."""
    for node in model.graph.node:
        node.name = _BLOCK_SCOPE.sub(lambda m: f"/blocks/blocks.{m[1]}/blocks.{m[1]}.{m[2]}/", node.name)


def ops_missing_at(model: Any, opset: int) -> list[tuple[str, int]]:
    """(op, the lowest opset that has it) for every op of ``model`` that opset ``opset`` lacks."""
    from onnx import defs

    missing = {}
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx") or node.op_type in missing:
            continue
        try:
            defs.get_schema(node.op_type, opset, "")
        except defs.SchemaError:
            missing[node.op_type] = defs.get_schema(node.op_type, MAX_OPSET, "").since_version
    return sorted(missing.items())
