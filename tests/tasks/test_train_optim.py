"""Parameter groups, the TF-style RMSProp and the learning-rate schedules."""

from __future__ import annotations

import math

import pytest
import torch

from effnet.models.network import build_model
from effnet.tasks.training.config import OptimConfig, ScheduleConfig
from effnet.tasks.training.optim import build_optimizer, build_scheduler, ema_multi_avg_fn, param_groups


def tiny():
    return build_model("efficientnet_b0", num_classes=10, width_mult=0.25, depth_mult=0.25)


def test_no_weight_decay_on_batchnorm_and_biases() -> None:
    model = tiny()
    groups = param_groups(model, 1e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = [names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    exempt = [names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    assert sorted(decayed + exempt) == sorted(names.values())
    assert all(name.endswith("weight") and model.get_parameter(name).ndim > 1 for name in decayed)
    assert "bn1.weight" in exempt and "classifier.bias" in exempt and "blocks.0.0.se.conv_reduce.bias" in exempt
    assert "conv_stem.weight" in decayed and "classifier.weight" in decayed


def test_layer_decay_scales_each_stage() -> None:
    model = tiny()
    decay = 0.5
    groups = param_groups(model, 1e-4, layer_decay=decay)
    scale_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        for p in group["params"]:
            scale_of[names[id(p)]] = group["lr_scale"]
    stages = len(model.blocks)
    assert scale_of["classifier.weight"] == 1.0 and scale_of["conv_head.weight"] == 1.0
    assert scale_of["conv_stem.weight"] == decay ** (stages + 1)
    for stage in range(stages):
        assert scale_of[f"blocks.{stage}.0.bn1.weight"] == decay ** (stages - stage)
    optimizer = build_optimizer(groups, OptimConfig(name="sgd", layer_decay=decay), 0.1, torch.device("cpu"))
    assert sorted({g["lr"] for g in optimizer.param_groups}) == sorted({0.1 * decay ** k for k in range(stages + 2)})


def tf_rmsprop(grads: list[torch.Tensor], lr: float, rho: float, momentum: float,
               eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """tf.compat.v1.train.RMSPropOptimizer's update (ms starts at 1, eps inside the sqrt).

    Returns the final weights and each weight's path length (sum of |update|).
    """
    weight = torch.zeros_like(grads[0], dtype=torch.float64)
    ms, mom, path = torch.ones_like(weight), torch.zeros_like(weight), torch.zeros_like(weight)
    for grad in grads:
        grad = grad.double()
        ms = rho * ms + (1 - rho) * grad * grad
        mom = momentum * mom + lr * grad / torch.sqrt(ms + eps)
        weight = weight - mom
        path += mom.abs()
    return weight, path


def torch_rmsprop(grads: list[torch.Tensor], optimizer_config: OptimConfig, lr: float) -> torch.Tensor:
    weight = torch.nn.Parameter(torch.zeros_like(grads[0]))
    optimizer = build_optimizer([{"params": [weight], "weight_decay": 0.0, "lr_scale": 1.0}], optimizer_config, lr,
                                torch.device("cpu"))
    for grad in grads:
        weight.grad = grad.clone()
        optimizer.step()
    return weight.detach().double()


def test_rmsprop_tf_follows_tensorflow_where_torch_defaults_do_not() -> None:
    """Gradients spanning small (eps-dominated) to large magnitudes, 30 steps at a constant lr."""
    torch.manual_seed(0)
    scales = torch.logspace(-4, 1, 64)
    grads = [torch.randn(64) * scales for _ in range(30)]
    reference, path = tf_rmsprop(grads, 0.01, 0.9, 0.9, 1e-3)
    ours = torch_rmsprop(grads, OptimConfig(name="rmsprop_tf", rmsprop_decay=0.9, momentum=0.9, eps=1e-3), 0.01)
    naive = torch_rmsprop(grads, OptimConfig(name="rmsprop", rmsprop_decay=0.9, momentum=0.9, eps=1e-3), 0.01)
    # distance from TF's weights, as a share of the distance TF's updates travelled
    assert ((ours - reference).abs() / path).max() < 0.1
    assert ((naive - reference).abs() / path).max() > 100  # torch's ms from 0 and eps outside the sqrt


def schedule_lrs(config: ScheduleConfig, steps_per_epoch: int, epochs: int, lr: float = 1.0) -> list[float]:
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch, epochs)
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_staircase_decay_097_every_24_epochs_after_warmup() -> None:
    steps, warmup = 10, 5
    lrs = schedule_lrs(ScheduleConfig(name="step", warmup_epochs=warmup, warmup_start_factor=0.1,
                                      decay_rate=0.97, decay_epochs=2.4), steps, 30)
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[warmup * steps] == pytest.approx(1.0)
    for k in range(8):
        step = warmup * steps + k * 24  # 2.4 epochs of 10 steps
        assert lrs[step] == pytest.approx(0.97**k)
        assert lrs[step + 23] == pytest.approx(0.97**k)


def test_cosine_runs_from_peak_to_min_lr() -> None:
    lrs = schedule_lrs(ScheduleConfig(name="cosine", warmup_epochs=1, min_lr=0.01), 10, 5)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    middle = 10 + 20
    assert lrs[middle] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 20 / 40)))
    assert lrs[-1] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_ema_follows_tensorflow_num_updates_warm_up() -> None:
    """TF's ExponentialMovingAverage(decay, num_updates) documents
    decay_t = min(decay, (1 + num_updates) / (10 + num_updates)); the EfficientNet reference
    passes the global step. Replayed here in plain float arithmetic, buffers included."""
    from torch.optim.swa_utils import AveragedModel

    torch.manual_seed(0)
    model = torch.nn.BatchNorm1d(3)
    ema = AveragedModel(model, multi_avg_fn=ema_multi_avg_fn(0.99), use_buffers=True)
    expected = None
    for step in range(40):
        with torch.no_grad():
            model.weight.copy_(torch.randn(3))
            model.running_var.copy_(torch.rand(3) + 0.5)
        ema.update_parameters(model)
        values = [float(v) for v in (*model.weight.detach(), *model.running_var)]
        if expected is None:
            expected = values  # the first update copies
        else:
            decay = min(0.99, (1 + step) / (10 + step))
            expected = [decay * e + (1 - decay) * v for e, v in zip(expected, values)]
    got = [float(v) for v in (*ema.module.weight.detach(), *ema.module.running_var)]
    assert got == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_an_fp16_overflow_step_leaves_weights_and_optimizer_state_alone(name: str) -> None:
    """GradScaler must skip an overflowing step entirely. Fused SGD does not (it writes its
    momentum buffer anyway and the weights go NaN a step later), so fp16 loops get foreach SGD;
    the optimizer then matches one that never saw the overflow."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    config = OptimConfig(name=name, implementation="auto")
    optimizer = build_optimizer(param_groups(model, 0.0), config, 0.1, torch.device("cpu"), grad_scaling=True)
    reference = build_optimizer(param_groups(twin, 0.0), config, 0.1, torch.device("cpu"), grad_scaling=True)
    scaler = torch.amp.GradScaler("cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}

    x = torch.randn(8, 4)
    scaler.scale(model(x).sum() * float("inf")).backward()
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any("momentum_buffer" in state for state in optimizer.state.values())  # SGD starts afresh

    # the next, finite step is the first step of an optimizer that never overflowed
    scaler.scale(model(x).pow(2).sum()).backward()
    scaler.step(optimizer)
    twin(x).pow(2).sum().backward()
    reference.step()
    for ours, theirs in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(ours, theirs, atol=1e-6)


def test_fused_sgd_is_kept_without_loss_scaling() -> None:
    model = torch.nn.Linear(4, 3)
    fused = build_optimizer(param_groups(model, 0.0), OptimConfig(name="sgd"), 0.1, torch.device("cpu"))
    scaled = build_optimizer(param_groups(model, 0.0), OptimConfig(name="sgd"), 0.1, torch.device("cpu"),
                             grad_scaling=True)
    assert fused.defaults["fused"] and not scaled.defaults["fused"]
