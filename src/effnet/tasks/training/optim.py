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

The other frameworks' RMSProp is TF's rule with their own names and starts: PaddlePaddle's
``RMSProp(rho, epsilon, momentum)`` divides by ``sqrt(ms + epsilon)`` and puts the learning
rate inside the momentum, as TF, but starts ``ms`` at 0 (its accumulators are zero-filled):
``rmsprop_tf`` with ``rmsprop_decay: rho``, ``eps: epsilon`` and ``rmsprop_initial_square: 0``.
MindSpore's ``nn.RMSProp(decay, momentum, epsilon=1e-10)`` starts ``ms`` at 1: ``rmsprop_tf``
with ``eps: 1e-10``. Their L2 regularizers (Paddle's ``L2Decay(coeff)``, MindSpore's and
torchvision's ``weight_decay``) add ``coeff * w`` to the gradient before the update, the
gradient of ``coeff / 2 * |w|^2`` on the loss; torch's ``weight_decay`` of SGD and RMSprop
does the same (it is not AdamW's decoupled decay), so ``optim.weight_decay: coeff`` is exact.

Schedules: warm-up (``LinearLR``, or a ramp from zero) then cosine, staircase exponential,
constant or MindSpore's piecewise-constant list, each per optimizer step; ``per_epoch`` holds
each epoch's value for the whole epoch, as MindSpore's ``dynamic_lr`` lists (``floor(step /
steps_per_epoch)``) and torchvision's reference script (``scheduler.step()`` after each
epoch) do.
"""

from __future__ import annotations

import bisect
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


#: Layers whose weight and bias are normalization scales and shifts (``norm_weight_decay``).
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)

#: Parameter kinds, in the order their groups are listed: exempt from decay, decayed with
#: ``weight_decay``, normalization layers with ``norm_weight_decay``.
EXEMPT, DECAYED, NORM = 0, 1, 2


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    no_decay_bn_bias: bool = True,
    layer_decay: float | None = None,
    norm_weight_decay: float | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups: no weight decay on BatchNorm and biases, and per-stage lr scales.

    Every 1-D parameter (BN weight and bias, conv and linear biases) goes to a group
    without weight decay: decaying them pulls normalisation scales to zero for no gain in
    generalisation. ``no_decay_bn_bias=False`` decays everything (PaddleClas' L2 applies to
    every parameter); with ``norm_weight_decay`` as well, normalization layers get that decay
    and biases the full one (torchvision's ``--norm-weight-decay``). With ``layer_decay`` d
    the head keeps the full learning rate and each stage closer to the input gets another
    factor d, so fine-tuning moves pretrained early features least. Each group's
    ``lr_scale`` multiplies the base learning rate.
    """
    num_stages = len(getattr(model, "blocks", ()))
    deepest = num_stages + 1
    norms = {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    decay_of = {EXEMPT: 0.0, DECAYED: weight_decay, NORM: norm_weight_decay}
    groups: dict[tuple[int, int], dict[str, Any]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if norm_weight_decay is not None and id(parameter) in norms:
            kind = NORM
        else:
            kind = EXEMPT if no_decay_bn_bias and parameter.ndim <= 1 else DECAYED
        layer = layer_index(name, num_stages) if layer_decay is not None else deepest
        key = (layer, kind)
        if key not in groups:
            scale = layer_decay ** (deepest - layer) if layer_decay is not None else 1.0
            groups[key] = {"params": [], "weight_decay": decay_of[kind], "lr_scale": scale, "layer": layer}
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
    tf_rule = config.name == "rmsprop_tf"
    eps = math.sqrt(config.eps or TF_RMSPROP_EPS) if tf_rule else config.eps or 1e-8
    optimizer = torch.optim.RMSprop(groups, lr=lr, alpha=config.rmsprop_decay, eps=eps, momentum=config.momentum,
                                    **kwargs)
    initial = config.rmsprop_initial_square
    if initial is None and tf_rule:
        initial = 1.0
    if initial is not None:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                optimizer.state[parameter] = {
                    "step": torch.zeros((), dtype=torch.float32),
                    "square_avg": torch.full_like(parameter, initial, memory_format=torch.preserve_format),
                    "momentum_buffer": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                }
    return optimizer


class RampFromZero:
    """Warm-up factor ``step / steps``: PaddleClas' ``LinearWarmup`` from a start lr of 0
    (``LinearLR`` refuses a start factor of 0). A class, so ``LambdaLR`` checkpoints it."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def __call__(self, step: int) -> float:
        return min(step / self.steps, 1.0)


class Piecewise:
    """MindSpore's ``piecewise_constant_lr``: ``values[j] / values[0]`` from ``ends[j-1]`` to
    ``ends[j]`` (steps since the start of the run; the schedule itself starts ``offset``
    steps in, after the warm-up). A class, so ``LambdaLR`` checkpoints it."""

    def __init__(self, ends: list[int], factors: list[float], offset: int) -> None:
        self.ends = ends
        self.factors = factors
        self.offset = offset

    def __call__(self, step: int) -> float:
        return self.factors[min(bisect.bisect_right(self.ends, step + self.offset), len(self.factors) - 1)]


class EpochSteps(lr_scheduler.LRScheduler):
    """A schedule counted in epochs, stepped once every ``steps_per_epoch`` optimizer steps,
    so each epoch runs at one learning rate (``schedule.per_epoch``)."""

    def __init__(self, epochs: lr_scheduler.LRScheduler, steps_per_epoch: int) -> None:
        # No LRScheduler.__init__: like SequentialLR, the wrapped schedule owns the lr.
        self.optimizer = epochs.optimizer
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.steps = 0
        self._last_lr = epochs.get_last_lr()

    def step(self, epoch: int | None = None) -> None:
        self.steps += 1
        if self.steps % self.steps_per_epoch == 0:
            self.epochs.step()
        self._last_lr = self.epochs.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "epochs": self.epochs.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = state_dict["steps"]
        self.epochs.load_state_dict(state_dict["epochs"])
        self._last_lr = self.epochs.get_last_lr()


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> lr_scheduler.LRScheduler:
    """Warm-up (LinearLR, or a ramp from 0) then cosine, staircase exponential (StepLR),
    constant or piecewise; per step, or with ``config.per_epoch`` per epoch.

    The staircase decay ("0.97 every 2.4 epochs") is StepLR with a step size of 2.4 epochs
    worth of optimizer steps, counted from the end of the warm-up. Piecewise milestones count
    from the start of the run, warm-up included (MindSpore's list has no separate warm-up).
    """
    if config.per_epoch:
        per_epoch = build_scheduler(optimizer, config.model_copy(update={"per_epoch": False}), 1, epochs)
        return EpochSteps(per_epoch, steps_per_epoch)
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
    elif config.name == "piecewise":
        values = config.values or (1.0,)
        ends = [round(epoch * steps_per_epoch) for epoch in config.milestones or ()]
        main = lr_scheduler.LambdaLR(optimizer, Piecewise(ends, [v / values[0] for v in values], warmup))
    else:
        main = lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup == 0:
        return main
    if config.warmup_start_factor > 0:
        warm: lr_scheduler.LRScheduler = lr_scheduler.LinearLR(
            optimizer, start_factor=config.warmup_start_factor, total_iters=warmup)
    else:
        warm = lr_scheduler.LambdaLR(optimizer, RampFromZero(warmup))
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
