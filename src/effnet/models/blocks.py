"""The three EfficientNet blocks, built from a ``BlockPlan``; attribute names follow timm."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from .layers import DropPath, Padding, SqueezeExcite, create_act, create_conv2d, create_norm
from .spec import BlockPlan


@dataclass(frozen=True)
class BlockOptions:
    """What every block shares: activation, padding convention, BatchNorm settings; and the
    nominal side of the input of the layer being built (``Padding.TF_SAME_STATIC`` needs it)."""

    activation: str
    padding: Padding = Padding.SYMMETRIC
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    input_size: int | None = None

    def norm(self, channels: int) -> nn.BatchNorm2d:
        return create_norm(channels, self.bn_eps, self.bn_momentum)

    def conv(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
        return create_conv2d(cin, cout, kernel, stride, groups, padding=self.padding, input_size=self.input_size)

    def at(self, input_size: int) -> BlockOptions:
        """These options for a layer whose input is ``input_size`` pixels wide at the nominal resolution."""
        return replace(self, input_size=input_size)


class _Residual(nn.Module):
    """Adds the input back (with stochastic depth) when shapes allow it."""

    def __init__(self, plan: BlockPlan) -> None:
        super().__init__()
        self.has_residual = plan.has_residual
        self.drop_path = DropPath(plan.drop_path_rate) if plan.has_residual else nn.Identity()

    def residual(self, x: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
        return self.drop_path(x) + shortcut if self.has_residual else x


def _se(plan: BlockPlan, options: BlockOptions) -> nn.Module:
    if not plan.se_channels:
        return nn.Identity()
    return SqueezeExcite(plan.mid_channels, plan.se_channels, options.activation)


class DepthwiseSeparable(_Residual):
    """V1 stage 1: depthwise kxk, SE, pointwise 1x1 (no expansion)."""

    def __init__(self, plan: BlockPlan, options: BlockOptions) -> None:
        super().__init__(plan)
        self.conv_dw = options.conv(plan.in_channels, plan.in_channels, plan.kernel, plan.stride, plan.in_channels)
        self.bn1 = options.norm(plan.in_channels)
        self.act1 = create_act(options.activation)
        self.se = _se(plan, options)
        self.conv_pw = options.conv(plan.in_channels, plan.out_channels, 1)
        self.bn2 = options.norm(plan.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_dw(x)))
        x = self.bn2(self.conv_pw(self.se(x)))
        return self.residual(x, shortcut)


class MBConv(_Residual):
    """Inverted residual: expand 1x1, depthwise kxk, SE, project 1x1."""

    def __init__(self, plan: BlockPlan, options: BlockOptions) -> None:
        super().__init__(plan)
        mid = plan.mid_channels
        if mid != plan.in_channels:
            self.conv_pw = options.conv(plan.in_channels, mid, 1)
            self.bn1 = options.norm(mid)
            self.act1 = create_act(options.activation)
        else:
            self.conv_pw = self.bn1 = self.act1 = nn.Identity()
        self.conv_dw = options.conv(mid, mid, plan.kernel, plan.stride, mid)
        self.bn2 = options.norm(mid)
        self.act2 = create_act(options.activation)
        self.se = _se(plan, options)
        self.conv_pwl = options.conv(mid, plan.out_channels, 1)
        self.bn3 = options.norm(plan.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv_pw(x)))
        x = self.act2(self.bn2(self.conv_dw(x)))
        x = self.bn3(self.conv_pwl(self.se(x)))
        return self.residual(x, shortcut)


class FusedMBConv(_Residual):
    """V2's Fused-MBConv: one full kxk conv does expansion and spatial mixing, then 1x1.

    With expansion 1 it is a single kxk conv + BN + activation (timm's ``ConvBnAct``,
    attribute names ``conv``/``bn1``), as in the first stage of every V2 table.
    """

    def __init__(self, plan: BlockPlan, options: BlockOptions) -> None:
        super().__init__(plan)
        self.expands = plan.mid_channels != plan.in_channels
        if not self.expands:
            self.conv = options.conv(plan.in_channels, plan.out_channels, plan.kernel, plan.stride)
            self.bn1 = options.norm(plan.out_channels)
            self.act1 = create_act(options.activation)
            return
        mid = plan.mid_channels
        self.conv_exp = options.conv(plan.in_channels, mid, plan.kernel, plan.stride)
        self.bn1 = options.norm(mid)
        self.act1 = create_act(options.activation)
        self.se = _se(plan, options)
        self.conv_pwl = options.conv(mid, plan.out_channels, 1)
        self.bn2 = options.norm(plan.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if not self.expands:
            return self.residual(self.act1(self.bn1(self.conv(x))), shortcut)
        x = self.act1(self.bn1(self.conv_exp(x)))
        x = self.bn2(self.conv_pwl(self.se(x)))
        return self.residual(x, shortcut)


BLOCKS: dict[str, type[nn.Module]] = {
    "depthwise": DepthwiseSeparable,
    "mbconv": MBConv,
    "fused": FusedMBConv,
}


def create_block(plan: BlockPlan, options: BlockOptions) -> nn.Module:
    """The block ``plan`` describes. Its strided conv sees the block's input size (a 1x1
    expansion before it keeps the size)."""
    return BLOCKS[plan.kind](plan, options.at(plan.input_size))
