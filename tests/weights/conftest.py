"""Fixtures for the parity tests: seeded inputs, and our twin of a reference with random but
well-scaled weights."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from effnet.models.network import EfficientNet, build_model
from effnet.models.spec import Padding
from effnet.models.variants import resolve
from effnet.weights.conversion import check_compatible, fill_batch_counters
from effnet.weights.sources import convert_state_dict


def _calibrate(model: nn.Module, images: torch.Tensor, seed: int = 0) -> nn.Module:
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


def _ours_from(reference_state: dict[str, torch.Tensor], arch: str, source: str, padding: Padding,
               bn_eps: float) -> EfficientNet:
    """Our model with a reference's tensors, converted and strictly checked."""
    model = build_model(arch, padding=padding, bn_eps=bn_eps).eval()
    state = convert_state_dict(reference_state, source, resolve(arch))
    fill_batch_counters(state, model.state_dict())
    check_compatible(state, model.state_dict(), arch)
    model.load_state_dict(state)
    return model


def _images(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def images() -> Callable[..., torch.Tensor]:
    """``images(batch, height, width, seed=1)``: a seeded NCHW batch."""
    return _images


@pytest.fixture()
def twin() -> Callable[..., EfficientNet]:
    """``twin(reference, batch, arch, source, padding, bn_eps)``: calibrate the reference on
    ``batch`` (in place), then build our model from its converted tensors."""

    def make(reference: nn.Module, batch: torch.Tensor, arch: str, source: str, padding: Padding,
             bn_eps: float) -> EfficientNet:
        _calibrate(reference, batch)
        return _ours_from(reference.state_dict(), arch, source, padding, bn_eps)

    return make
