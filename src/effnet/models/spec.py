"""The architecture as data: families, variants, scaling rules and the resolved plan.

Pure Python on purpose (no torch import): the whole family can be listed, scaled and
counted (parameters) in microseconds, and every other room builds from the same plan.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from typing import Literal

from .tables import BlockKind, Stage, StageTable

Activation = Literal["silu", "relu6"]


class Padding(str, enum.Enum):
    """How a convolution pads.

    SYMMETRIC: PyTorch style, ``kernel // 2`` on every side (torchvision/timm-native weights).
    TF_SAME: TensorFlow "SAME", decided per input size; for stride 2 on even inputs it pads
    one pixel less on the top/left than on the bottom/right. Weights trained in TF
    (the Lite packages, lukemelas, timm ``tf_*``, Keras) need it to reproduce their logits.
    TF_SAME_STATIC: TF "SAME" frozen at the network's nominal resolution, as PaddleClas pads:
    each strided conv keeps the top/left padding it has at the plan's ``resolution`` whatever
    the input, and pads the bottom/right so that it still outputs ``ceil(size / stride)``.
    Equal to TF_SAME at the nominal size (and whenever every strided layer's input has the
    parity it has there); needed to reproduce PaddleClas's logits at other sizes.
    """

    SYMMETRIC = "symmetric"
    TF_SAME = "tf_same"
    TF_SAME_STATIC = "tf_same_static"


@dataclass(frozen=True)
class Family:
    """Rules shared by every member of a family, so no code ever asks ``if name == ...``.

    ``round_limit``: V1 rounds channels to a multiple of ``divisor`` and adds one divisor when
    rounding lost more than 10% (limit 0.9); V2 never adds it (limit 0.0).
    ``fixed_stem_head``: Lite keeps stem 32 and head 1280 whatever the width multiplier.
    ``unscaled_depth_stages``: stage indices whose repeats ignore the depth multiplier
    (Lite: the first and the last, "-1" meaning the last).
    """

    name: str
    table: StageTable
    activation: Activation
    use_se: bool = True
    round_limit: float = 0.9
    divisor: int = 8
    fixed_stem_head: bool = False
    unscaled_depth_stages: tuple[int, ...] = ()
    drop_path_rate: float = 0.2


@dataclass(frozen=True)
class Variant:
    """One named member: a family plus its compound-scaling coefficients."""

    family: Family
    width: float
    depth: float
    resolution: int
    dropout: float
    table: StageTable | None = None
    eval_resolution: int | None = None

    @property
    def stage_table(self) -> StageTable:
        return self.table or self.family.table

    @property
    def test_resolution(self) -> int:
        return self.eval_resolution or self.resolution


#: What a convolution does in its block; converters name layers by it (``expand_conv``,
#: ``_depthwise_conv``, ``project_conv``), since every ecosystem names roles, not positions.
Role = Literal["stem", "expand", "depthwise", "project", "head"]
Shapes = dict[str, tuple[int, ...]]

#: BatchNorm tensors that are statistics, not parameters
NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def count_parameters(shapes: Shapes) -> int:
    """Elements of the trainable tensors among ``shapes`` (BatchNorm statistics excluded)."""
    return sum(math.prod(shape) for name, shape in shapes.items() if not name.endswith(NORM_BUFFERS))


@dataclass(frozen=True)
class ConvLayer:
    """One convolution with the BatchNorm after it: our attribute names and its shape."""

    role: Role
    conv: str
    norm: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int = 1
    groups: int = 1

    def tensor_shapes(self) -> Shapes:
        """The conv's weight (no bias: BatchNorm follows) and the BatchNorm's tensors."""
        out = self.out_channels
        return {f"{self.conv}.weight": (out, self.in_channels // self.groups, self.kernel, self.kernel),
                f"{self.norm}.weight": (out,), f"{self.norm}.bias": (out,), f"{self.norm}.running_mean": (out,),
                f"{self.norm}.running_var": (out,), f"{self.norm}.num_batches_tracked": ()}


@dataclass(frozen=True)
class SqueezeExciteLayer:
    """Squeeze-excitation: a 1x1 reduce and a 1x1 expand, both with bias (``se.conv_reduce``,
    ``se.conv_expand``)."""

    channels: int
    reduced_channels: int
    name: str = "se"

    def tensor_shapes(self) -> Shapes:
        channels, reduced = self.channels, self.reduced_channels
        return {f"{self.name}.conv_reduce.weight": (reduced, channels, 1, 1), f"{self.name}.conv_reduce.bias": (reduced,),
                f"{self.name}.conv_expand.weight": (channels, reduced, 1, 1), f"{self.name}.conv_expand.bias": (channels,)}


Layer = ConvLayer | SqueezeExciteLayer


@dataclass(frozen=True)
class BlockPlan:
    """One block after scaling: everything needed to build it, nothing to look up."""

    stage: int
    index: int
    kind: BlockKind
    in_channels: int
    out_channels: int
    mid_channels: int
    kernel: int
    stride: int
    se_channels: int
    drop_path_rate: float
    #: side of the block's input at the plan's ``resolution`` (``Padding.TF_SAME_STATIC`` pads
    #: the block's strided conv for it)
    input_size: int

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def expands(self) -> bool:
        return self.mid_channels != self.in_channels

    def layers(self) -> tuple[Layer, ...]:
        """The block's anatomy in forward order: each conv with its norm, and the SE.

        Written once, here: parameter counts and the tensors a checkpoint must hold are read
        from it, every converter reads its key map off it (torchvision numbers these layers
        in this order; lukemelas and Keras name them by role), and ``blocks.py`` builds
        exactly these attributes (the tests compare every module with it). Attribute names
        are timm's.
        """
        se: tuple[Layer, ...] = (SqueezeExciteLayer(self.mid_channels, self.se_channels),) if self.se_channels else ()
        cin, mid, cout, k, stride = self.in_channels, self.mid_channels, self.out_channels, self.kernel, self.stride
        if self.kind == "depthwise":
            return (ConvLayer("depthwise", "conv_dw", "bn1", cin, cin, k, stride, groups=cin), *se,
                    ConvLayer("project", "conv_pw", "bn2", cin, cout, 1))
        if self.kind == "mbconv":
            expand = (ConvLayer("expand", "conv_pw", "bn1", cin, mid, 1),) if self.expands else ()
            return (*expand, ConvLayer("depthwise", "conv_dw", "bn2", mid, mid, k, stride, groups=mid), *se,
                    ConvLayer("project", "conv_pwl", "bn3", mid, cout, 1))
        if not self.expands:  # fused without expansion: one kxk conv (timm's ConvBnAct), no SE
            return (ConvLayer("project", "conv", "bn1", cin, cout, k, stride),)
        return (ConvLayer("expand", "conv_exp", "bn1", cin, mid, k, stride), *se,
                ConvLayer("project", "conv_pwl", "bn2", mid, cout, 1))

    def tensor_shapes(self) -> Shapes:
        """Every tensor of the block under its name relative to the block (``conv_dw.weight``)."""
        return {name: shape for layer in self.layers() for name, shape in layer.tensor_shapes().items()}


@dataclass(frozen=True)
class NetworkPlan:
    """The resolved network: what ``EfficientNet`` builds and what counts are computed from."""

    name: str
    family: str
    activation: Activation
    stem_channels: int
    head_channels: int
    blocks: tuple[BlockPlan, ...]
    num_stages: int
    resolution: int
    eval_resolution: int
    width: float
    depth: float
    dropout: float
    drop_path_rate: float
    num_classes: int = 1000
    in_chans: int = 3

    def stage_blocks(self, stage: int) -> tuple[BlockPlan, ...]:
        return tuple(b for b in self.blocks if b.stage == stage)

    def feature_info(self) -> list[dict[str, int]]:
        """Stages ending at each stride (2, 4, 8, 16, 32): the detection/segmentation taps."""
        info: dict[int, dict[str, int]] = {}
        reduction = 2
        for stage in range(self.num_stages):
            blocks = self.stage_blocks(stage)
            reduction *= blocks[0].stride
            info[reduction] = {"stage": stage, "reduction": reduction, "channels": blocks[-1].out_channels}
        return [info[r] for r in sorted(info)]

    @property
    def stem(self) -> ConvLayer:
        return ConvLayer("stem", "conv_stem", "bn1", self.in_chans, self.stem_channels, 3, 2)

    @property
    def head(self) -> ConvLayer:
        return ConvLayer("head", "conv_head", "bn2", self.blocks[-1].out_channels, self.head_channels, 1)

    def tensor_shapes(self) -> Shapes:
        """Every parameter and buffer of the module, by state-dict name, with its shape: what a
        checkpoint must hold, known before anything is built (so a file that does not fit
        is refused before memory is spent on it)."""
        shapes = self.stem.tensor_shapes()
        for block in self.blocks:
            prefix = f"blocks.{block.stage}.{block.index}."
            shapes |= {prefix + name: shape for name, shape in block.tensor_shapes().items()}
        shapes |= self.head.tensor_shapes()
        if self.num_classes:
            shapes |= {"classifier.weight": (self.num_classes, self.head_channels), "classifier.bias": (self.num_classes,)}
        return shapes

    def num_params(self) -> int:
        """Trainable parameters, counted from the plan alone (equals the torch module's count)."""
        return count_parameters(self.tensor_shapes())


def round_channels(channels: float, multiplier: float, divisor: int = 8, round_limit: float = 0.9) -> int:
    """Scale ``channels`` by ``multiplier`` and round to a multiple of ``divisor``.

    Matches TF's ``round_filters``: round half up to the divisor, never below it, and (V1
    only, ``round_limit=0.9``) add one divisor when rounding lost more than 10%.
    """
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < round_limit * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, multiplier: float) -> int:
    return int(math.ceil(multiplier * repeats))


def _strided(size: int, stride: int) -> int:
    """Output side of a strided conv: ``ceil(size / stride)`` with either padding convention
    (odd kernels padded symmetrically, or TF "SAME")."""
    return -(-size // stride)


def plan_network(
    name: str,
    variant: Variant,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    width_mult: float | None = None,
    depth_mult: float | None = None,
    resolution: int | None = None,
    drop_rate: float | None = None,
    drop_path_rate: float | None = None,
) -> NetworkPlan:
    """Apply the family's scaling rules to a variant (optionally with overridden multipliers)."""
    family = variant.family
    if width_mult is not None or depth_mult is not None or resolution is not None:
        variant = replace(
            variant,
            width=variant.width if width_mult is None else width_mult,
            depth=variant.depth if depth_mult is None else depth_mult,
            resolution=variant.resolution if resolution is None else resolution,
            eval_resolution=None if resolution is not None else variant.eval_resolution,
        )
    table = variant.stage_table

    def width(channels: int) -> int:
        return round_channels(channels, variant.width, family.divisor, family.round_limit)

    stem = table.stem_channels if family.fixed_stem_head else width(table.stem_channels)
    head = table.head_channels if family.fixed_stem_head else width(table.head_channels)
    unscaled = {s % len(table.stages) for s in family.unscaled_depth_stages}
    rows: list[tuple[int, Stage, int]] = []
    for stage_index, stage in enumerate(table.stages):
        repeats = stage.repeats if stage_index in unscaled else round_repeats(stage.repeats, variant.depth)
        rows.append((stage_index, stage, repeats))

    total_blocks = sum(repeats for _, _, repeats in rows)
    rate = family.drop_path_rate if drop_path_rate is None else drop_path_rate
    blocks: list[BlockPlan] = []
    in_channels = stem
    size = _strided(variant.resolution, 2)  # after the stem
    for stage_index, stage, repeats in rows:
        out_channels = width(stage.out_channels)
        for i in range(repeats):
            se_ratio = stage.se_ratio if family.use_se else 0.0
            stride = stage.stride if i == 0 else 1
            blocks.append(
                BlockPlan(
                    stage=stage_index,
                    index=i,
                    kind=stage.kind,
                    in_channels=in_channels,
                    out_channels=out_channels,
                    mid_channels=in_channels * stage.expand_ratio,
                    kernel=stage.kernel,
                    stride=stride,
                    se_channels=max(1, int(in_channels * se_ratio)) if se_ratio else 0,
                    drop_path_rate=rate * len(blocks) / total_blocks,
                    input_size=size,
                )
            )
            in_channels = out_channels
            size = _strided(size, stride)

    return NetworkPlan(
        name=name,
        family=family.name,
        activation=family.activation,
        stem_channels=stem,
        head_channels=head,
        blocks=tuple(blocks),
        num_stages=len(table.stages),
        resolution=variant.resolution,
        eval_resolution=variant.test_resolution,
        width=variant.width,
        depth=variant.depth,
        dropout=variant.dropout if drop_rate is None else drop_rate,
        drop_path_rate=rate,
        num_classes=num_classes,
        in_chans=in_chans,
    )
