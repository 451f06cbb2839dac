"""Parameter groups, the TF-style RMSProp and the learning-rate schedules."""

from __future__ import annotations

import io
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


def test_everything_decays_or_only_norm_layers_are_exempt() -> None:
    """PaddleClas' L2 reaches every parameter (no_decay_bn_bias: false); torchvision's
    --norm-weight-decay 0 exempts BatchNorm weights and biases but decays every other bias."""
    model = tiny()
    names = {id(p): n for n, p in model.named_parameters()}

    def decay_of(groups: list[dict]) -> dict[str, float]:
        return {names[id(p)]: g["weight_decay"] for g in groups for p in g["params"]}

    everything = decay_of(param_groups(model, 1e-5, no_decay_bn_bias=False))
    assert set(everything.values()) == {1e-5} and len(everything) == len(names)
    norms = decay_of(param_groups(model, 2e-5, no_decay_bn_bias=False, norm_weight_decay=0.0))
    assert norms["bn1.weight"] == norms["bn1.bias"] == norms["blocks.1.0.bn2.weight"] == 0.0
    assert norms["classifier.bias"] == norms["blocks.0.0.se.conv_reduce.bias"] == norms["conv_stem.weight"] == 2e-5
    exempt = {n for n, decay in norms.items() if decay == 0.0}
    assert exempt == {n for n in names.values() if ".bn" in n or n.startswith("bn")}


def tf_rmsprop(grads: list[torch.Tensor], lr: float, rho: float, momentum: float,
               eps: float, initial_square: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """tf.compat.v1.train.RMSPropOptimizer's update (ms starts at 1, eps inside the sqrt); with
    ``initial_square`` 0 Paddle's ``rmsprop`` kernel (the same rule, zero-filled accumulators).

    Returns the final weights and each weight's path length (sum of |update|).
    """
    weight = torch.zeros_like(grads[0], dtype=torch.float64)
    ms = torch.full_like(weight, initial_square)
    mom, path = torch.zeros_like(weight), torch.zeros_like(weight)
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


@pytest.mark.parametrize(("framework", "eps", "initial_square"), [("paddle", 1e-3, 0.0), ("mindspore", 1e-10, None)])
def test_paddle_and_mindspore_rmsprop_map_onto_rmsprop_tf(framework: str, eps: float,
                                                         initial_square: float | None) -> None:
    """Paddle: RMSProp(rho 0.9, epsilon 1e-3, momentum 0.9), mean square from 0 (the PaddleClas
    recipe); MindSpore: nn.RMSProp(momentum=0.9) defaults decay 0.9, epsilon 1e-10, mean square
    from 1. Distances from their weights as a share of the path their updates travel.

    From 0 the mean square passes through eps, where sqrt(ms) + sqrt(eps) and sqrt(ms + eps)
    differ most (up to sqrt(2)): Paddle's mapping keeps the typical weight within 5% and the
    worst within 35%, where starting at TF's 1 puts the typical weight 30% off."""
    torch.manual_seed(0)
    scales = torch.logspace(-4, 1, 64)
    grads = [torch.randn(64) * scales for _ in range(30)]
    reference, path = tf_rmsprop(grads, 0.01, 0.9, 0.9, eps, 1.0 if initial_square is None else initial_square)
    config = OptimConfig(name="rmsprop_tf", rmsprop_decay=0.9, momentum=0.9, eps=eps,
                         rmsprop_initial_square=initial_square)
    off = (torch_rmsprop(grads, config, 0.01) - reference).abs() / path
    if framework == "mindspore":
        assert off.max() < 1e-3  # eps 1e-10: sqrt(1e-10) = 1e-5 is as good as inside the root
        return
    assert off.median() < 0.05 and off.max() < 0.35
    started_at_one = torch_rmsprop(grads, OptimConfig(name="rmsprop_tf", eps=eps), 0.01)
    assert ((started_at_one - reference).abs() / path).median() > 0.3


def test_rmsprop_initial_square_fills_the_state() -> None:
    weight = torch.nn.Parameter(torch.zeros(3))
    for name, initial, expected in (("rmsprop_tf", None, 1.0), ("rmsprop_tf", 0.0, 0.0), ("rmsprop", 0.5, 0.5)):
        optimizer = build_optimizer([{"params": [weight], "weight_decay": 0.0, "lr_scale": 1.0}],
                                    OptimConfig(name=name, rmsprop_initial_square=initial), 0.1, torch.device("cpu"))
        assert torch.equal(optimizer.state[weight]["square_avg"], torch.full((3,), expected))
    plain = build_optimizer([{"params": [weight], "weight_decay": 0.0, "lr_scale": 1.0}], OptimConfig(name="rmsprop"),
                            0.1, torch.device("cpu"))
    assert not plain.state  # torch's own lazy start at 0


def schedule_lrs(config: ScheduleConfig, steps_per_epoch: int, epochs: int, lr: float = 1.0) -> list[float]:
    """The lr each optimizer step runs at."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=lr)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch, epochs)
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_piecewise_is_mindspores_piecewise_constant_lr() -> None:
    """mindspore.nn.piecewise_constant_lr's documented example: milestone [2, 5, 10],
    learning_rates [0.1, 0.05, 0.01] -> [0.1, 0.1, 0.05, 0.05, 0.05, 0.01 x 5] (one step an epoch here)."""
    config = ScheduleConfig(name="piecewise", milestones=(2, 5, 10), values=(0.1, 0.05, 0.01))
    assert schedule_lrs(config, 1, 10, lr=0.1) == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05] + [0.01] * 5)
    # milestones are epochs and count from the start, warm-up included
    warm = ScheduleConfig(name="piecewise", milestones=(2, 5, 10), values=(0.1, 0.05, 0.01), warmup_epochs=1,
                          warmup_start_factor=0.5)
    lrs = schedule_lrs(warm, 4, 10, lr=0.1)
    assert lrs[0] == pytest.approx(0.05) and lrs[4:8] == pytest.approx([0.1] * 4)
    assert lrs[8:20] == pytest.approx([0.05] * 12) and lrs[20:] == pytest.approx([0.01] * 20)


def mindspore_cosine_decay_lr(min_lr: float, max_lr: float, total_step: int, step_per_epoch: int,
                              decay_epoch: int) -> list[float]:
    """mindspore.nn.cosine_decay_lr as documented: current_epoch = floor(i / step_per_epoch)."""
    return [min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * min(i // step_per_epoch, decay_epoch)
                                                             / decay_epoch)) for i in range(total_step)]


def test_per_epoch_cosine_is_mindspores_cosine_decay_lr() -> None:
    """The MindSpore recipe: max_lr 0.1, min_lr 0, decay_epoch = epochs (here 6 epochs of 5 steps)."""
    config = ScheduleConfig(name="cosine", per_epoch=True, min_lr=0.0)
    assert schedule_lrs(config, 5, 6, lr=0.1) == pytest.approx(mindspore_cosine_decay_lr(0.0, 0.1, 30, 5, 6))
    with_floor = ScheduleConfig(name="cosine", per_epoch=True, min_lr=0.01)
    assert schedule_lrs(with_floor, 5, 6, lr=0.1) == pytest.approx(mindspore_cosine_decay_lr(0.01, 0.1, 30, 5, 6))


def test_warm_up_from_zero_then_cosine_is_paddleclas_cosine() -> None:
    """ppcls Cosine(learning_rate, warmup_epoch, warmup_start_lr=0): LinearWarmup start_lr +
    (lr - start_lr) * t / warmup_steps, then CosineAnnealingDecay over (epochs - warmup) * steps."""
    steps, epochs, warmup, lr = 4, 10, 2, 0.032
    config = ScheduleConfig(name="cosine", warmup_epochs=warmup, warmup_start_factor=0.0)
    warm = warmup * steps
    expected = [lr * t / warm if t < warm else
                lr * 0.5 * (1 + math.cos(math.pi * (t - warm) / ((epochs - warmup) * steps)))
                for t in range(steps * epochs)]
    assert schedule_lrs(config, steps, epochs, lr=lr) == pytest.approx(expected)


def test_per_epoch_warm_up_and_cosine_is_torchvisions_reference() -> None:
    """references/classification/train.py: LinearLR(start_factor=0.01, total_iters=5) then
    CosineAnnealingLR(T_max=epochs - 5), through SequentialLR, stepped once after each epoch."""
    steps, epochs, lr = 3, 12, 0.5
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=lr)
    reference = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=5),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - 5, eta_min=0.0),
    ], milestones=[5])
    expected = []
    for _ in range(epochs):
        expected += [optimizer.param_groups[0]["lr"]] * steps
        optimizer.step()
        reference.step()
    config = ScheduleConfig(name="cosine", per_epoch=True, warmup_epochs=5, warmup_start_factor=0.01)
    assert schedule_lrs(config, steps, epochs, lr=lr) == pytest.approx(expected)


@pytest.mark.parametrize("config", [
    ScheduleConfig(name="cosine", per_epoch=True, warmup_epochs=2, warmup_start_factor=0.0),
    ScheduleConfig(name="piecewise", milestones=(2, 4, 6), values=(1.0, 0.1, 0.01), warmup_epochs=1,
                   warmup_start_factor=0.0),
])
def test_new_schedules_resume_from_their_state(config: ScheduleConfig) -> None:
    """A checkpoint mid-epoch: a fresh scheduler loaded from the state continues the same lrs."""
    steps, epochs = 3, 6
    expected = schedule_lrs(config, steps, epochs)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler = build_scheduler(optimizer, config, steps, epochs)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    state, lr = scheduler.state_dict(), optimizer.param_groups[0]["lr"]
    buffer = io.BytesIO()
    torch.save(state, buffer)  # checkpoints are read back with weights_only
    buffer.seek(0)
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    resumed = build_scheduler(optimizer, config, steps, epochs)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    optimizer.param_groups[0]["lr"] = lr  # the optimizer's own state carries its lr
    lrs = []
    for _ in range(steps * epochs - 7):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        resumed.step()
    assert lrs == pytest.approx(expected[7:])


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
