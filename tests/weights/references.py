"""Shared by the parity tests: references with random but well-scaled weights, our twin of each."""

from __future__ import annotations

import torch
from torch import nn

from effnet.models.network import EfficientNet, build_model
from effnet.models.spec import Padding, resolve
from effnet.weights.convert import check_compatible, convert_state_dict, fill_batch_counters


def calibrate(model: nn.Module, images: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random BatchNorm affines, then running statistics measured on ``images``.

    Random conv weights with BatchNorm's initial statistics (mean 0, variance 1) make
    activations grow through dozens of residual blocks until logits reach the hundreds, where
    fp32 rounding alone exceeds 1e-4. Measuring the statistics on real inputs (only the norm
    layers in train mode, so no dropout or drop-path is applied) keeps every layer near unit
    scale, as in a trained network.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) * 0.5 + 0.75)
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator) * 0.1)
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: one batch sets the statistics
        model.eval()
        for norm in norms:
            norm.train()
        model(images)
    return model.eval()


def ours_from(reference_state: dict[str, torch.Tensor], arch: str, source: str, padding: Padding,
              bn_eps: float, num_classes: int = 1000) -> EfficientNet:
    """Our model with a reference's tensors, converted and strictly checked."""
    model = build_model(arch, num_classes=num_classes, padding=padding, bn_eps=bn_eps).eval()
    plan = resolve(arch, num_classes=num_classes)
    state = convert_state_dict(reference_state, source, plan)  # type: ignore[arg-type]
    fill_batch_counters(state, model.state_dict())
    check_compatible(state, model.state_dict(), arch)
    model.load_state_dict(state)
    return model


def images(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()
