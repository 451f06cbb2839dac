"""torchvision: ``features.<stage+1>.<i>.block.<k>`` with each conv+norm one
``Conv2dNormActivation`` (``.0`` conv, ``.1`` norm) and SE as ``fc1``/``fc2``.

``features.0`` is the stem, ``features.<stages+1>`` the head conv, ``classifier.1`` the linear
layer (``classifier.0`` is dropout). Padding is symmetric; torchvision builds B0-B4 with eps
1e-5 and B5-B7/V2 with 1e-3 (its registry entries say which; a bare file gets 1e-3).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...models.spec import ConvLayer, NetworkPlan, Padding
from .base import Source, StateDict, rename_by_prefix

if TYPE_CHECKING:
    import torch


def key_map(plan: NetworkPlan) -> dict[str, str]:
    """torchvision's module prefixes -> ours; ``k`` counts a block's layers in forward order."""
    head = f"features.{plan.num_stages + 1}"
    mapping = {"features.0.0": "conv_stem", "features.0.1": "bn1", f"{head}.0": "conv_head", f"{head}.1": "bn2",
               "classifier.1": "classifier"}
    for block in plan.blocks:
        theirs, ours = f"features.{block.stage + 1}.{block.index}.block", f"blocks.{block.stage}.{block.index}"
        for k, layer in enumerate(block.layers()):
            if isinstance(layer, ConvLayer):
                mapping[f"{theirs}.{k}.0"] = f"{ours}.{layer.conv}"
                mapping[f"{theirs}.{k}.1"] = f"{ours}.{layer.norm}"
            else:
                mapping[f"{theirs}.{k}.fc1"] = f"{ours}.{layer.name}.conv_reduce"
                mapping[f"{theirs}.{k}.fc2"] = f"{ours}.{layer.name}.conv_expand"
    return mapping


def from_torchvision(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    return rename_by_prefix(state, key_map(plan))


SOURCE = Source("torchvision", markers=("features.0.0.weight",), classifier="classifier.1.weight",
                convert=from_torchvision, padding=Padding.SYMMETRIC, bn_eps=1e-3)
