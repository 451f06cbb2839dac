"""Optimizers, parameter groups and learning-rate schedules, all from ``torch.optim``.

RMSProp: TensorFlow (the EfficientNet papers) and PyTorch differ in three ways.
TF divides by ``sqrt(ms + eps)``, torch by ``sqrt(ms) + eps``; TF starts the mean square
``ms`` at 1, torch at 0; TF scales the momentum input by the learning rate, torch scales
the momentum output. ``rmsprop_tf`` keeps torch's optimizer and closes the two gaps that
matter: it passes ``eps_torch = sqrt(eps_tf)`` (the denominators then agree when ``ms``
is far below or far above ``eps`` and differ by at most a factor sqrt(2) in between, where
passing TF's 1e-3 unchanged would give up to 30x larger steps for parameters with tiny
gradients) and it starts the mean square at 1. The third difference only matters while
the learning rate changes and is left as torch does it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler
from torch.optim.swa_utils import get_ema_multi_avg_fn

from .config import OptimConfig, ScheduleConfig

#: TF's RMSProp epsilon in the EfficientNet recipes, the default of ``rmsprop_tf``.
TF_RMSPROP_EPS = 1e-3


def layer_index(name: str, num_stages: int) -> int:
    """Depth of a parameter for layer-wise decay: stem 0, stage s -> s + 1, head last.

    Relies on the timm attribute names every EfficientNet here uses (``conv_stem``, ``bn1``,
    ``blocks.<stage>.<block>``, head modules after the blocks).
    """
    if name.startswith(("conv_stem.", "bn1.")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return num_stages + 1


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay_bn_bias: bool = True,
    layer_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups: no weight decay on BatchNorm and biases, and per-stage lr scales.

    Every 1-D parameter (BN weight and bias, conv and linear biases) goes to a group
    without weight decay: decaying them pulls normalisation scales to zero for no gain in
    generalisation. With ``layer_decay`` d the head keeps the full learning rate and each
    stage closer to the input gets another factor d, so fine-tuning moves pretrained
    early features least. Each group's ``lr_scale`` multiplies the base learning rate.
    """
    num_stages = len(getattr(model, "blocks", ()))
    deepest = num_stages + 1
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        decays = not (no_decay_bn_bias and parameter.ndim <= 1)
        layer = layer_index(name, num_stages) if layer_decay is not None else deepest
        key = (layer, decays)
        if key not in groups:
            scale = layer_decay ** (deepest - layer) if layer_decay is not None else 1.0
            groups[key] = {"params": [], "weight_decay": weight_decay if decays else 0.0, "lr_scale": scale,
                           "layer": layer}
        groups[key]["params"].append(parameter)
    return [groups[key] for key in sorted(groups)]


def _implementation(optimizer_class: type, choice: str, device: torch.device,
                    grad_scaling: bool = False) -> dict[str, bool]:
    """``fused`` where the optimizer and device have a fused kernel, else ``foreach``.

    Fused SGD is never used under fp16 loss scaling: GradScaler hands a fused optimizer the
    overflow flag instead of skipping the step, and the fused SGD kernel still writes the
    momentum buffer on an overflow step (inf, or memory it never initialized), so the weights
    go NaN a step later (seen with torch 2.11 on an H100: fp16 training stuck at chance;
    tests/tasks/test_train_optim.py reproduces it on the CPU). Fused Adam/AdamW skip correctly.
    """
    accepted = inspect.signature(optimizer_class).parameters
    if choice == "for_loop":
        return {"foreach": False}
    fused_ok = not (grad_scaling and optimizer_class is torch.optim.SGD)
    if choice in ("auto", "fused") and fused_ok and "fused" in accepted and device.type in ("cpu", "cuda"):
        return {"fused": True}
    return {"foreach": True}


def build_optimizer(
    groups: Iterable[dict[str, Any]], config: OptimConfig, lr: float, device: torch.device,
    grad_scaling: bool = False,
) -> torch.optim.Optimizer:
    """The optimizer the recipe names, with ``lr`` times each group's ``lr_scale``.

    ``grad_scaling``: the loop uses a GradScaler (fp16), which rules out fused SGD.
    """
    groups = [dict(group, lr=lr * group["lr_scale"]) for group in groups]
    if config.name == "sgd":
        kwargs = _implementation(torch.optim.SGD, config.implementation, device, grad_scaling)
        return torch.optim.SGD(groups, lr=lr, momentum=config.momentum, nesterov=config.nesterov, **kwargs)
    if config.name == "adamw":
        kwargs = _implementation(torch.optim.AdamW, config.implementation, device)
        return torch.optim.AdamW(groups, lr=lr, betas=config.betas, eps=config.eps or 1e-8, **kwargs)
    kwargs = _implementation(torch.optim.RMSprop, config.implementation, device)
    if config.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=config.rmsprop_decay, eps=config.eps or 1e-8,
                                   momentum=config.momentum, **kwargs)
    optimizer = torch.optim.RMSprop(
        groups, lr=lr, alpha=config.rmsprop_decay, eps=math.sqrt(config.eps or TF_RMSPROP_EPS),
        momentum=config.momentum, **kwargs,
    )
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            optimizer.state[parameter] = {
                "step": torch.zeros((), dtype=torch.float32),
                "square_avg": torch.ones_like(parameter, memory_format=torch.preserve_format),
                "momentum_buffer": torch.zeros_like(parameter, memory_format=torch.preserve_format),
            }
    return optimizer


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> lr_scheduler.LRScheduler:
    """Warm-up (LinearLR) then cosine, staircase exponential (StepLR) or constant; per step.

    The staircase decay ("0.97 every 2.4 epochs") is StepLR with a step size of 2.4 epochs
    worth of optimizer steps, counted from the end of the warm-up.
    """
    total = steps_per_epoch * epochs
    warmup = min(round(config.warmup_epochs * steps_per_epoch), max(total - 1, 0))
    if config.name == "cosine":
        main: lr_scheduler.LRScheduler = lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(total - warmup, 1), eta_min=config.min_lr
        )
    elif config.name == "step":
        main = lr_scheduler.StepLR(
            optimizer, step_size=max(1, round(config.decay_epochs * steps_per_epoch)), gamma=config.decay_rate
        )
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    warm = lr_scheduler.LinearLR(optimizer, start_factor=config.warmup_start_factor, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [warm, main], milestones=[warmup])


def ema_multi_avg_fn(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """EMA update for ``AveragedModel`` as TF's ``ExponentialMovingAverage(decay, num_updates)``.

    The EfficientNet reference averages with ``num_updates=global_step``: after ``n`` updates
    the decay is ``min(decay, (1 + n) / (10 + n))``. Without that warm-up (``torch``'s
    ``get_ema_multi_avg_fn``) the average carries the random start, and with
    ``use_buffers=True`` the wild BatchNorm statistics of the first steps, for about
    ``1 / (1 - decay)`` steps: on the from-scratch digits recipe (decay 0.99) the EMA model
    stayed at chance for five epochs. Past the warm-up it is ``get_ema_multi_avg_fn``'s update.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        updates = float(num_averaged)
        get_ema_multi_avg_fn(min(decay, (1.0 + updates) / (10.0 + updates)))(averaged, current, num_averaged)

    return update
