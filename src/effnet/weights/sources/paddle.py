"""PaddleClas (``.pdparams``, read by ``weights/pdparams.py``): its EfficientNet B0-B7 and B0-small.

PaddleClas's model (``ppcls/arch/backbone/model_zoo/efficientnet.py``, a port of lukemelas's)
matches ours tensor for tensor, SE included. Its files are keyed by structured names, the
module tree Paddle loads them by: ``_ef._conv_stem._conv``, then each block as
``_ef._blocks.<flat index>.`` when it is the first of its stage and ``_ef.block.<flat index>.``
otherwise (hence the double dots), each conv + BatchNorm a ``ConvBNLayer`` (``_ecn``,
``_dcn``, ``_pcn`` by role: conv at ``._conv._conv._conv``, BatchNorm at ``._conv._bn``), SE as
``_se._conv1``/``_se._conv2``, the head conv ``_conv``, the classifier ``_fc``. Paddle's
``Linear`` stores its weight (in, out): the converter transposes it.

Padding: B0-B7 use ``padding_type="SAME"``, TF "SAME" computed once from each layer's input
size at the model's nominal resolution (``Padding.TF_SAME_STATIC``); B0-small uses
``"DYNAMIC"``, ``((stride - 1) + (kernel - 1)) // 2`` per side, which for its odd kernels is our
symmetric padding. BatchNorm: ``epsilon=1e-3`` for every model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...data.transforms import Preprocessing
from ...errors import WeightsError
from ...models.spec import ConvLayer, NetworkPlan, Padding
from .base import FileSettings, Source, StateDict

if TYPE_CHECKING:
    import torch

#: role -> their ConvBNLayer
ROLES = {"expand": "_ecn", "depthwise": "_dcn", "project": "_pcn"}
#: their leaf names -> ours (conv and linear weights and biases keep theirs)
LEAVES = {"weight": "weight", "bias": "bias", "_mean": "running_mean", "_variance": "running_var"}
BN_EPS = 1e-3
#: the SE-free family: PaddleClas's EfficientNetB0_small, built with "DYNAMIC" (symmetric) padding
SYMMETRIC_FAMILY = "efficientnet_small"


def _conv_bn(prefix: str, layer: ConvLayer, ours: str) -> dict[str, str]:
    """A ``ConvBNLayer`` at ``prefix``: its conv and its BatchNorm -> our ``layer``'s."""
    return {f"{prefix}._conv._conv": f"{ours}{layer.conv}", f"{prefix}._bn": f"{ours}{layer.norm}"}


def key_map(plan: NetworkPlan) -> dict[str, str]:
    """Their module prefixes (``_ef.block.4.._dcn._conv._bn``) -> ours (``blocks.3.1.bn2``)."""
    mapping = _conv_bn("_ef._conv_stem._conv", plan.stem, "") | _conv_bn("_conv", plan.head, "")
    mapping["_fc"] = "classifier"
    for flat, block in enumerate(plan.blocks):
        if block.kind == "fused":
            raise WeightsError(f"PaddleClas checkpoints hold EfficientNet-B blocks, not {plan.name}'s {block.kind}")
        theirs = f"_ef.{'_blocks' if block.index == 0 else 'block'}.{flat}."
        ours = f"blocks.{block.stage}.{block.index}."
        for layer in block.layers():
            if isinstance(layer, ConvLayer):
                mapping |= _conv_bn(f"{theirs}.{ROLES[layer.role]}._conv", layer, ours)
            else:
                mapping[f"{theirs}._se._conv1._conv"] = f"{ours}{layer.name}.conv_reduce"
                mapping[f"{theirs}._se._conv2._conv"] = f"{ours}{layer.name}.conv_expand"
    return mapping


def check_shortcuts(plan: NetworkPlan) -> None:
    """Refuse plans in which PaddleClas computes something else than we do.

    PaddleClas adds a block's shortcut when ``block_args.stride == 1``, but the first block of
    each stage keeps the stride as the list its decoder made (``[1]``), so it never gets one.
    B0-B7 have none there anyway (their first blocks change the channel count); a narrower
    model whose first block keeps it (width 0.2: stage 1 is 8 -> 8) has one in our plan and
    none in theirs.
    """
    blocks = [f"blocks.{b.stage}.0" for b in plan.blocks if b.index == 0 and b.has_residual]
    if blocks:
        raise WeightsError(f"{plan.name} at width {plan.width:g} has a shortcut in {', '.join(blocks)}, which "
                           "PaddleClas's EfficientNet never adds to the first block of a stage")


def from_paddle(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    """PaddleClas tensors -> ours, the classifier transposed to (out, in). Unknown keys are kept
    as they are, so that the strict check reports them."""
    check_shortcuts(plan)
    prefixes = key_map(plan)
    out: StateDict = {}
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        if module not in prefixes or leaf not in LEAVES:
            out[key] = tensor
            continue
        ours = f"{prefixes[module]}.{LEAVES[leaf]}"
        out[ours] = tensor.t() if ours == "classifier.weight" and tensor.ndim == 2 else tensor
    return out


def preprocessing(size: int) -> Preprocessing:
    """PaddleClas's eval pipeline (``ppcls/configs/ImageNet/EfficientNet/*.yaml``): the shorter
    side resized to ``size + 32`` (bilinear), the centre ``size`` cropped, ImageNet mean/std."""
    return Preprocessing(size=size, crop_fraction=size / (size + 32), crop_mode="resize_then_center_crop",
                         interpolation="bilinear")


def settings_for(plan: NetworkPlan) -> FileSettings:
    padding = Padding.SYMMETRIC if plan.family == SYMMETRIC_FAMILY else Padding.TF_SAME_STATIC
    return FileSettings(padding, BN_EPS, preprocessing(plan.eval_resolution))


SOURCE = Source("paddle", markers=("_ef._conv_stem._conv._conv._conv.weight",), classifier="_fc.weight",
                classifier_axis=1, convert=from_paddle, padding=Padding.TF_SAME_STATIC, bn_eps=BN_EPS,
                settings_for=settings_for)
