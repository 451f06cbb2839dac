"""The training losses: timm's binary cross-entropy against its formula, the choice by recipe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effnet.tasks.training.config import TrainConfig
from effnet.tasks.training.losses import BinaryCrossEntropy, build_loss


def bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-mean(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))), over images and classes."""
    p = torch.sigmoid(logits.double())
    return -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()


def test_hard_labels_get_timms_on_and_off_values() -> None:
    """timm: off = smoothing / C, on = 1 - smoothing + off."""
    torch.manual_seed(0)
    logits, labels = torch.randn(5, 7), torch.tensor([0, 6, 3, 3, 1])
    off = 0.1 / 7
    targets = torch.full((5, 7), off, dtype=torch.float64).scatter_(1, labels[:, None], 1 - 0.1 + off)
    loss = BinaryCrossEntropy(smoothing=0.1)(logits, labels)
    torch.testing.assert_close(loss.double(), bce(logits, targets), rtol=1e-6, atol=1e-7)


def test_soft_targets_are_smoothed_as_timms_mixup_smooths_them() -> None:
    """timm's Mixup mixes smoothed one-hot rows: lam * smooth(y1) + (1 - lam) * smooth(y2),
    which is smooth(lam * y1 + (1 - lam) * y2)."""
    torch.manual_seed(1)
    logits = torch.randn(2, 4)
    lam = 0.7
    y1, y2 = torch.eye(4)[[0, 2]], torch.eye(4)[[3, 1]]

    def smooth(y: torch.Tensor) -> torch.Tensor:
        return y * (1 - 0.2) + 0.2 / 4

    expected = bce(logits, (lam * smooth(y1) + (1 - lam) * smooth(y2)).double())
    got = BinaryCrossEntropy(smoothing=0.2)(logits, lam * y1 + (1 - lam) * y2)
    torch.testing.assert_close(got.double(), expected, rtol=1e-6, atol=1e-7)


def test_threshold_makes_both_mixed_classes_positive() -> None:
    logits = torch.zeros(1, 4)
    mixed = torch.tensor([[0.7, 0.0, 0.3, 0.0]])
    loss = BinaryCrossEntropy(smoothing=0.1, target_threshold=0.2)(logits, mixed)
    torch.testing.assert_close(loss.double(), bce(logits, torch.tensor([[1.0, 0.0, 1.0, 0.0]], dtype=torch.float64)))


def test_the_recipe_chooses_the_loss() -> None:
    plain = build_loss(TrainConfig(label_smoothing=0.1))
    assert isinstance(plain, nn.CrossEntropyLoss) and plain.label_smoothing == 0.1
    binary = build_loss(TrainConfig(loss="bce", label_smoothing=0.0, bce_target_threshold=0.2))
    assert isinstance(binary, BinaryCrossEntropy) and binary.target_threshold == 0.2
    with pytest.raises(ValueError, match="bce_target_threshold applies to train.loss: bce"):
        TrainConfig(bce_target_threshold=0.2)
