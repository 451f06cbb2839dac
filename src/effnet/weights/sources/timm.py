"""timm (and geffnet): our attribute names are timm's, so its checkpoints load as they are.

timm's norm layers (``BatchNormAct2d``) subclass ``BatchNorm2d`` and keep its tensor names.
A bare file is taken as PyTorch-trained (symmetric padding, eps 1e-5); timm's TF ports are
registry entries, which say TF "same" and 1e-3.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...models.spec import NetworkPlan, Padding
from .base import Source, StateDict

if TYPE_CHECKING:
    import torch


def from_timm(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    return dict(state)


SOURCE = Source("timm", markers=("conv_stem.weight",), classifier="classifier.weight", convert=from_timm,
                padding=Padding.SYMMETRIC, bn_eps=1e-5)
