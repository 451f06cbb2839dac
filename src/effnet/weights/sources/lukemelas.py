"""lukemelas/EfficientNet-PyTorch (``efficientnet_pytorch``) and the Lite packages built on it.

Blocks are numbered flat (``_blocks.5``) and named by role: ``_expand_conv``/``_bn0``,
``_depthwise_conv``/``_bn1``, ``_project_conv``/``_bn2``, ``_se_reduce``/``_se_expand``. Its
checkpoints are TF ports: TF "same" padding, eps 1e-3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...errors import WeightsError
from ...models.spec import ConvLayer, NetworkPlan, Padding
from .base import Source, StateDict, rename_by_prefix

if TYPE_CHECKING:
    import torch

#: role -> (their conv, their norm)
ROLES = {
    "expand": ("_expand_conv", "_bn0"),
    "depthwise": ("_depthwise_conv", "_bn1"),
    "project": ("_project_conv", "_bn2"),
}
TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def key_map(plan: NetworkPlan) -> dict[str, str]:
    """Their module prefixes (``_blocks.5._bn1``) -> ours (``blocks.2.1.bn2``)."""
    mapping = dict(TOP)
    for flat, block in enumerate(plan.blocks):
        if block.kind == "fused":
            raise WeightsError(f"lukemelas checkpoints hold EfficientNet V1/Lite blocks, not {plan.name}'s {block.kind}")
        theirs, ours = f"_blocks.{flat}", f"blocks.{block.stage}.{block.index}"
        for layer in block.layers():
            if isinstance(layer, ConvLayer):
                conv, norm = ROLES[layer.role]
                mapping[f"{theirs}.{conv}"] = f"{ours}.{layer.conv}"
                mapping[f"{theirs}.{norm}"] = f"{ours}.{layer.norm}"
            else:
                mapping[f"{theirs}._se_reduce"] = f"{ours}.{layer.name}.conv_reduce"
                mapping[f"{theirs}._se_expand"] = f"{ours}.{layer.name}.conv_expand"
    return mapping


def from_lukemelas(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    return rename_by_prefix(state, key_map(plan))


SOURCE = Source("lukemelas", markers=("_conv_stem.weight",), classifier="_fc.weight", convert=from_lukemelas,
                padding=Padding.TF_SAME, bn_eps=1e-3)
