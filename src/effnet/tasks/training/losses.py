"""The training loss: cross-entropy, or per-class binary cross-entropy as timm trains with it.

Both take hard labels (class indices) or the soft targets MixUp/CutMix make, and smooth them
the same way: ``target * (1 - smoothing) + smoothing / classes``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig


class BinaryCrossEntropy(nn.Module):
    """timm's ``BinaryCrossEntropy``: one sigmoid per class instead of one softmax.

    Hard labels become one-hot rows with ``1 - smoothing + smoothing / C`` on the class and
    ``smoothing / C`` elsewhere (timm's on/off values); soft targets get the same smoothing,
    which is what timm's MixUp applies before its BCE. ``target_threshold`` then turns every
    target above it into 1 and the rest into 0 (timm's ``--bce-target-thresh``: a mixed
    image counts as both of its classes). The loss is the mean over images and classes.
    """

    def __init__(self, smoothing: float = 0.0, target_threshold: float | None = None) -> None:
        super().__init__()
        self.smoothing = smoothing
        self.target_threshold = target_threshold

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        classes = logits.shape[-1]
        if targets.ndim == 1:
            targets = F.one_hot(targets.long(), classes)
        targets = targets.to(logits.dtype) * (1.0 - self.smoothing) + self.smoothing / classes
        if self.target_threshold is not None:
            targets = (targets > self.target_threshold).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits, targets)


def build_loss(config: TrainConfig) -> nn.Module:
    """The loss ``train.loss`` names, with ``train.label_smoothing``."""
    if config.loss == "bce":
        return BinaryCrossEntropy(config.label_smoothing, config.bce_target_threshold)
    return nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
