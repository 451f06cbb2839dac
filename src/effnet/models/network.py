"""``EfficientNet``: one nn.Module for the whole family, built from a ``NetworkPlan``."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BlockOptions, create_block
from .layers import Padding, create_act
from .spec import NetworkPlan
from .variants import resolve

GlobalPool = Literal["avg", "max", "avgmax"]


class SelectPool(nn.Module):
    """Global pooling to a (N, C) vector: average (the papers), max, or their mean."""

    def __init__(self, pool_type: GlobalPool = "avg") -> None:
        super().__init__()
        if pool_type not in ("avg", "max", "avgmax"):
            raise ValueError(f"global_pool must be 'avg', 'max' or 'avgmax', not {pool_type!r}")
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "avg":
            return x.mean((2, 3))
        if self.pool_type == "max":
            return x.amax((2, 3))
        return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type}"


class EfficientNet(nn.Module):
    """Stem, stages of blocks, head: every variant of V1, Lite and V2.

    ``features_only=True`` builds no head and returns the feature maps at strides
    2, 4, 8, 16 and 32 (``feature_info`` lists their channels), for detection and
    segmentation backbones.
    """

    def __init__(
        self,
        plan: NetworkPlan,
        *,
        padding: Padding | str = Padding.SYMMETRIC,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        global_pool: GlobalPool = "avg",
        features_only: bool = False,
    ) -> None:
        super().__init__()
        self.plan = plan
        self.padding = Padding(padding)
        self.bn_eps = bn_eps
        self.num_classes = plan.num_classes
        self.features_only = features_only
        self.feature_info = plan.feature_info()
        self.grad_checkpointing = False
        options = BlockOptions(plan.activation, self.padding, bn_eps, bn_momentum)

        self.conv_stem = options.at(plan.resolution).conv(plan.in_chans, plan.stem_channels, 3, stride=2)
        self.bn1 = options.norm(plan.stem_channels)
        self.act1 = create_act(plan.activation)
        self.blocks = nn.Sequential(
            *(
                nn.Sequential(*(create_block(b, options) for b in plan.stage_blocks(stage)))
                for stage in range(plan.num_stages)
            )
        )
        self.num_features = plan.head_channels
        if not features_only:
            self.conv_head = options.conv(plan.blocks[-1].out_channels, plan.head_channels, 1)
            self.bn2 = options.norm(plan.head_channels)
            self.act2 = create_act(plan.activation)
            self.global_pool = SelectPool(global_pool)
            self.drop_rate = plan.dropout
            self.dropout = nn.Dropout(plan.dropout)
            self.classifier = self._make_classifier(plan.num_classes)
        self._init_weights()

    def _make_classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def _init_weights(self) -> None:
        """The TF reference init: fan-out normal for convs, uniform for the classifier."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
                nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / module.weight.shape[0] ** 0.5
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    # -- classifier management (timm-compatible names) ---------------------------------
    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: GlobalPool | None = None) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` (0: no head)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectPool(global_pool)
        self.classifier = self._make_classifier(num_classes)
        if isinstance(self.classifier, nn.Linear):
            bound = 1.0 / num_classes**0.5
            nn.init.uniform_(self.classifier.weight, -bound, bound)
            nn.init.zeros_(self.classifier.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in backward instead of storing them."""
        self.grad_checkpointing = enable

    # -- forward --------------------------------------------------------------------------
    def _run_blocks(self, x: torch.Tensor, collect: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        taps = {info["stage"] for info in self.feature_info} if collect else set()
        features: list[torch.Tensor] = []
        for stage_index, stage in enumerate(self.blocks):
            for block in stage:
                if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if stage_index in taps:
                features.append(x)
        return x, features

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, blocks and head conv: the (N, C, H/32, W/32) map before pooling."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        x, _ = self._run_blocks(x, collect=False)
        return self.act2(self.bn2(self.conv_head(x)))

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps at strides 2, 4, 8, 16, 32 (the end of the stage for each stride)."""
        x = self.act1(self.bn1(self.conv_stem(x)))
        _, features = self._run_blocks(x, collect=True)
        return features

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, dropout, classifier; ``pre_logits=True`` returns the pooled embedding."""
        x = self.global_pool(x)
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))


def build_model(name: str, **kwargs: object) -> EfficientNet:
    """Build a randomly initialised variant: ``build_model("efficientnet_b3", num_classes=10)``.

    Plan keywords (num_classes, in_chans, width_mult, depth_mult, resolution, drop_rate,
    drop_path_rate) go to the spec; the rest (padding, bn_eps, bn_momentum, global_pool,
    features_only) to the module.
    """
    plan_keys = ("num_classes", "in_chans", "width_mult", "depth_mult", "resolution", "drop_rate", "drop_path_rate")
    plan_kwargs = {k: kwargs.pop(k) for k in plan_keys if k in kwargs}
    return EfficientNet(resolve(name, **plan_kwargs), **kwargs)  # type: ignore[arg-type]
