"""Building bricks: convolution with each padding convention, SE, DropPath, activations."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .spec import Padding


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Total padding TF "SAME" adds along one axis of length ``size``.

    Written with integer ops and ``torch.sym_max`` so it stays symbolic under torch.export,
    which keeps the padding dynamic in an exported graph. The ``max`` is only needed when
    the kernel spans less than the stride: leaving it out otherwise lets the exporter see
    that each output is ``ceil(size / stride)`` (nested maxima across strided layers make
    torch.export's shape reasoning take minutes), and the ceiling avoids negative floor
    division, which ONNX integer ``Div`` truncates where Python floors.
    """
    out = (size + stride - 1) // stride
    span = (kernel - 1) * dilation + 1
    padding = (out - 1) * stride + span - size
    return padding if span >= stride else torch.sym_max(padding, 0)


class Conv2dSame(nn.Conv2d):
    """A Conv2d that pads like TensorFlow "SAME" for whatever input size it receives."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = same_padding(height, self.kernel_size[0], self.stride[0], self.dilation[0])
        pad_w = same_padding(width, self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class Conv2dStaticSame(nn.Conv2d):
    """A Conv2d padded like TensorFlow "SAME" at a nominal input size, for any input size
    (PaddleClas's ``padding_type="SAME"``).

    The top/left padding is the one TF "SAME" gives at ``input_size``; the bottom/right is
    whatever it takes to output ``ceil(size / stride)`` like TF, so the output has TF's shape
    and, at sizes of the nominal parity, TF's values. Only the bottom/right padding depends
    on the input, as the same symbolic integers as ``Conv2dSame`` (exports stay dynamic).
    For the strided convs of EfficientNet (3x3 and 5x5, stride 2) it is never negative.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, *, input_size: int,
                 groups: int = 1, bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=bias)
        self.input_size = input_size
        self.before = tuple(same_padding(input_size, k, s) // 2 for k, s in zip(self.kernel_size, self.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        top, left = self.before
        bottom = same_padding(height, self.kernel_size[0], self.stride[0]) - top
        right = same_padding(width, self.kernel_size[1], self.stride[1]) - left
        x = F.pad(x, [left, right, top, bottom])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, 1, self.groups)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, input_size={self.input_size}"


def create_conv2d(
    in_channels: int,
    out_channels: int,
    kernel: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: Padding = Padding.SYMMETRIC,
    input_size: int | None = None,
) -> nn.Conv2d:
    """A conv whose padding follows ``padding``; ``input_size`` is the nominal side of its
    input, which ``Padding.TF_SAME_STATIC`` needs for strided convs.

    With stride 1 and an odd kernel, TF "SAME" (static or not) is exactly symmetric, so only
    strided convolutions pay for it.
    """
    if stride > 1 and padding == Padding.TF_SAME:
        return Conv2dSame(in_channels, out_channels, kernel, stride, padding=0, groups=groups, bias=bias)
    if stride > 1 and padding == Padding.TF_SAME_STATIC:
        if input_size is None:
            raise ValueError("Padding.TF_SAME_STATIC needs the nominal input size of a strided conv")
        return Conv2dStaticSame(in_channels, out_channels, kernel, stride, groups=groups, bias=bias,
                                input_size=input_size)
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, groups=groups, bias=bias)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "silu": lambda: nn.SiLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
}


def create_act(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class SqueezeExcite(nn.Module):
    """Channel attention: global pool, reduce, activate, expand, sigmoid gate (timm names)."""

    def __init__(self, channels: int, reduced_channels: int, activation: str) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced_channels, 1, bias=True)
        self.act1 = create_act(activation)
        self.conv_expand = nn.Conv2d(reduced_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.conv_expand(self.act1(self.conv_reduce(scale)))
        return x * scale.sigmoid()


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate:.4f}"


def create_norm(channels: int, eps: float, momentum: float = 0.1) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=eps, momentum=momentum)
