"""The training loop: model, data, optimizer, schedule, EMA, mixed precision, DDP, checkpoints.

Standard pieces throughout (``torch.optim`` schedulers, ``AveragedModel`` EMA,
``CrossEntropyLoss`` with label smoothing, ``DistributedDataParallel``, kornia augmentation);
this module wires them together and owns the one thing they do not give: a run that can be
stopped at any step, by a crash, ``kill -9`` or Ctrl-C, and continued to the same weights.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import random
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from ..._files import staged
from ..._progress import progress as progress_bar
from ...data.augment import MixAugment, TrainAugment, normalize_batch, resize_batch, to_unit_float
from ...data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ...errors import EffnetError, UsageError
from ...models.network import EfficientNet
from ...weights.entry import WeightsEntry
from ...weights.io import metadata_from_entry, write_safetensors
from ...weights.loading import create_model
from .checkpoint import CheckpointManager, rng_state, set_rng_state
from .config import Config, config_to_yaml
from .data import ResumableSampler, ShardSampler, TrainData, build_data, make_loader
from .losses import build_loss
from ...runtime.distributed import DistContext
from .metrics import MetricsLog, plot_curves
from .optim import build_optimizer, build_scheduler, ema_multi_avg_fn, param_groups

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingStopped(EffnetError):
    """Ctrl-C or SIGTERM: the run saved a checkpoint at a step boundary and can be resumed."""

    exit_code = 130
    label = ""


@dataclass(frozen=True)
class Stage:
    """Settings of one progressive-learning stage (or the whole run without stages)."""

    index: int
    image_size: int
    rand_augment_magnitude: float | None
    drop_rate: float | None
    mixup_alpha: float


def stage_for_epoch(config: Config, epoch: int, base_size: int) -> Stage:
    """EfficientNetV2 progressive learning: stage k of M uses lo + (hi - lo) * k / (M - 1)."""
    augment, progressive = config.augment, config.progressive
    if progressive is None:
        return Stage(0, base_size, augment.rand_augment_magnitude, None, augment.mixup_alpha)
    index = min(epoch * progressive.stages // config.train.epochs, progressive.stages - 1)
    fraction = index / (progressive.stages - 1)

    def between(pair: tuple[float, float] | None, default: Any) -> Any:
        return default if pair is None else pair[0] + (pair[1] - pair[0]) * fraction

    size = int(round(between(progressive.image_size, base_size)))
    return Stage(
        index, size,
        between(progressive.rand_augment_magnitude, augment.rand_augment_magnitude),
        between(progressive.drop_rate, None),
        between(progressive.mixup_alpha, augment.mixup_alpha),
    )


def channel_stats(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Per-channel mean/std for ``channels`` inputs from RGB statistics.

    One channel: the average (exact for grey images fed to a stem whose RGB filters were
    summed, when the RGB statistics are equal, as for TF-trained weights). More channels:
    repeated, matching how the stem filters were repeated.
    """
    if len(values) == channels:
        return tuple(values)
    if channels == 1:
        return (sum(values) / len(values),)
    return tuple(values[i % len(values)] for i in range(channels))


def run_narrow_strided_convs_in_fp32(model: nn.Module) -> None:
    """For CPU bf16 training: a strided conv whose input is narrower than its stride runs in fp32.

    oneDNN's bf16 backward-weights kernel (``jit_bf16:avx512_core[_bf16]``, used for bf16 on
    every AVX-512 CPU, never on AVX2-only ones, where ATen's kernels run) leaves weight-gradient
    entries unwritten when the input is narrower than the stride (a 1x1 map into a stride-2
    conv: B0's last stride-2 stages at <= 16 px). They keep recycled heap bytes: stale
    activations, inf or NaN, so the loss went NaN depending on which tests ran before and on
    the thread count. Those convs see 1-2 px maps, so running them in fp32 costs nothing.
    """

    def guarded(conv: nn.Conv2d, forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and (x.shape[-2] < conv.stride[0] or x.shape[-1] < conv.stride[1]):
            with torch.autocast("cpu", enabled=False):
                return forward(x.float())
        return forward(x)

    for module in model.modules():
        if isinstance(module, nn.Conv2d) and max(module.stride) > 1:
            module.forward = functools.partial(guarded, module, module.forward)


def set_train_mode(model: nn.Module, freeze_bn_stats: bool) -> None:
    """``model.train()``, keeping BatchNorm on its running statistics when asked."""
    model.train()
    if freeze_bn_stats:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


class _StopFlag:
    """Turns the first Ctrl-C/SIGTERM into a request to checkpoint and stop at the next step."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class Trainer:
    """One training run in ``output``; ``resume=True`` continues from its newest readable
    checkpoint, ``resume=PATH`` from that checkpoint file."""

    def __init__(self, config: Config, output: str | Path, *, resume: bool | str | Path = False,
                 run_name: str = "run", echo: Callable[[str], None] = print) -> None:
        self.config = config
        self.output = Path(output)
        self.run_name = run_name
        train = config.train
        cuda = train.device == "cuda" or (train.device == "auto" and torch.cuda.is_available())
        if cuda and not torch.cuda.is_available():
            raise EffnetError("train.device is cuda but no CUDA device is available")
        self.dist = DistContext.from_env("cuda" if cuda else "cpu")
        self.device = torch.device("cuda", self.dist.local_rank) if cuda else torch.device("cpu")
        self.echo = echo if self.dist.is_main else (lambda _text: None)
        self.warn = (lambda text: print(text, file=sys.stderr, flush=True)) if self.dist.is_main else self.echo
        self.checkpoints = CheckpointManager(self.output / "checkpoints", train.keep_checkpoints)
        self.metrics = MetricsLog(self.output, enabled=self.dist.is_main)
        self._check_output(resume)
        if train.threads:  # process-wide: only once the run is sure to start
            torch.set_num_threads(train.threads)

        seed_everything(train.seed)
        self.model = self._build_model()
        if train.amp == "bf16" and self.device.type == "cpu":
            run_narrow_strided_convs_in_fp32(self.model)
        self.plan = self.model.plan
        self.base_size = config.data.image_size or self.plan.resolution
        final_size = config.progressive.image_size[1] if config.progressive else self.base_size
        self.eval_size = config.data.eval_size or round(final_size * self.plan.eval_resolution / self.plan.resolution)
        self.eval_preprocessing = self._eval_preprocessing()
        self.mean = channel_stats(config.data.mean or self.eval_preprocessing.mean, config.model.in_chans)
        self.std = channel_stats(config.data.std or self.eval_preprocessing.std, config.model.in_chans)
        self.data: TrainData = build_data(config, self.eval_preprocessing)

        world = self.dist.world_size
        self.sampler = ResumableSampler(self.data.train, world, self.dist.rank, train.seed,
                                        repeats=config.data.aug_repeats)
        micro_batches = self.sampler.num_samples // train.batch_size
        self.accumulate = config.optim.accumulate_steps
        self.steps_per_epoch = micro_batches // self.accumulate
        if self.steps_per_epoch == 0:
            raise EffnetError(
                f"{len(self.data.train)} training images make no full step of batch_size {train.batch_size} "
                f"x {world} process(es) x accumulate_steps {self.accumulate}"
            )
        self.global_batch = train.batch_size * world * self.accumulate
        reference = config.optim.lr_reference_batch
        self.lr = config.optim.lr * (self.global_batch / reference if reference else 1.0)

        groups = param_groups(self.model, config.optim.weight_decay,
                              no_decay_bn_bias=config.optim.no_decay_bn_bias, layer_decay=config.optim.layer_decay,
                              norm_weight_decay=config.optim.norm_weight_decay)
        self.optimizer = build_optimizer(groups, config.optim, self.lr, self.device,
                                         grad_scaling=train.amp == "fp16")
        self.scheduler = build_scheduler(self.optimizer, config.schedule, self.steps_per_epoch, train.epochs)
        self.amp_dtype = AMP_DTYPES.get(train.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train.amp == "fp16")
        self.criterion = build_loss(train)

        self.wrapped: nn.Module = self.model
        if self.dist.enabled:
            self.wrapped = DistributedDataParallel(
                self.model, device_ids=[self.device.index] if cuda else None, forward_sync_buffers=True
            )
        self.ema = (
            AveragedModel(self.model, multi_avg_fn=ema_multi_avg_fn(train.ema_decay), use_buffers=True)
            if train.ema_decay else None
        )
        self.forward = torch.compile(self.wrapped) if train.compile else self.wrapped

        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.skipped = 0
        self.failed_examples: list[str] = []
        self.elapsed = 0.0
        self.best: dict[str, Any] = {"top1": None, "epoch": None}
        self.loss_sum = 0.0
        self.loss_count = 0
        self.resume_start: int | None = None
        if resume:
            self._resume(resume)
        if self.dist.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            with staged(self.output / "config.yaml") as temporary:
                temporary.write_text(config_to_yaml(config))

    # -- setup ---------------------------------------------------------------------------
    def _check_output(self, resume: bool | str | Path) -> None:
        existing = self.checkpoints.latest()
        if isinstance(resume, (str, Path)):
            if not Path(resume).is_file():
                raise UsageError(f"--resume {resume}: checkpoint not found")
            return
        if resume and existing is None:
            raise UsageError(f"{self.output}: no checkpoint to resume from")
        if not resume and existing is not None:
            raise UsageError(
                f"{self.output} already holds a run ({existing.name}); pass --resume to continue it "
                "or choose another --output"
            )

    def _build_model(self) -> EfficientNet:
        spec = self.config.model
        options: dict[str, Any] = {"global_pool": spec.global_pool}
        for key in ("drop_rate", "drop_path_rate", "width_mult", "depth_mult", "bn_momentum", "bn_eps", "padding"):
            value = getattr(spec, key)
            if value is not None:
                options[key] = value
        model = create_model(spec.name, spec.weights, num_classes=spec.num_classes, in_chans=spec.in_chans, **options)
        if spec.head_init_scale is not None:
            # TF's classifier init (uniform +-1/sqrt(classes)) on 1280 pretrained features starts
            # a few-class head with logits of +-10; fine-tuning settles faster from a small head.
            with torch.no_grad():
                model.classifier.weight.mul_(spec.head_init_scale)
                model.classifier.bias.zero_()
        model.set_grad_checkpointing(spec.grad_checkpointing)
        if self.device.type == "cuda" and self.dist.enabled and spec.sync_bn and not spec.freeze_bn_stats:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        memory_format = torch.channels_last if self.config.train.channels_last else torch.contiguous_format
        return model.to(self.device, memory_format=memory_format)

    def _eval_preprocessing(self) -> Preprocessing:
        """The weights' own evaluation pipeline at ``eval_size`` (ImageNet defaults without weights)."""
        entry = getattr(self.model, "pretrained_cfg", None)
        data = self.config.data
        base = entry.preprocessing if entry is not None else Preprocessing(
            interpolation=data.interpolation, mean=IMAGENET_MEAN, std=IMAGENET_STD
        )
        preprocessing = base.with_size(self.eval_size)
        if data.crop_fraction(self.eval_size) is not None:
            preprocessing = replace(preprocessing, crop_fraction=data.crop_fraction(self.eval_size))
        if data.source == "digits":
            preprocessing = replace(preprocessing, crop_mode="resize")
        return preprocessing

    def _train_augment(self, stage: Stage) -> TrainAugment:
        augment, data = self.config.augment, self.config.data
        return TrainAugment(
            stage.image_size, augment.crop_scale, augment.crop_ratio, augment.hflip, augment.auto_augment,
            augment.rand_augment_ops, stage.rand_augment_magnitude, data.interpolation,
            rand_augment_scale=augment.rand_augment_scale, random_erase=augment.random_erase, erase_fill=self.mean,
        )

    # -- checkpoints ---------------------------------------------------------------------
    def _state(self, rng: list[Any]) -> dict[str, Any]:
        return {
            "format": "effnet.train", "version": 1,
            "config": self.config.model_dump(mode="json"), "run_name": self.run_name,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "world_size": self.dist.world_size, "steps_per_epoch": self.steps_per_epoch,
            "sampler": {"seed": self.config.train.seed, "epoch": self.epoch,
                        "start": self.step_in_epoch * self.accumulate * self.config.train.batch_size},
            "rng": rng,
            "progress": {"skipped": self.skipped, "failed_examples": self.failed_examples,
                         "elapsed": self.elapsed, "best_top1": self.best["top1"], "best_epoch": self.best["epoch"],
                         "loss_sum": self.loss_sum, "loss_count": self.loss_count},
        }

    def save_checkpoint(self) -> None:
        rng = self.dist.gather(rng_state())  # every rank's generators, so each resumes its own
        if self.dist.is_main:
            self.checkpoints.save(self._state(rng), self.global_step)
        self.dist.barrier()

    def _resume(self, chosen: bool | str | Path) -> None:
        if isinstance(chosen, (str, Path)):
            path, state = Path(chosen), self.checkpoints.load(chosen)
        else:
            path, state = self.checkpoints.load_newest_readable(self.warn)
        self.model.load_state_dict(state["model"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        # the run's name (the recipe's) names its weights; a resume given only the folder keeps it
        self.run_name = state.get("run_name", self.run_name)
        saved = Config.model_validate(state["config"])
        same_plan = (saved.train.epochs, saved.schedule, state.get("steps_per_epoch")) == (
            self.config.train.epochs, self.config.schedule, self.steps_per_epoch)
        if same_plan:
            self.scheduler.load_state_dict(state["scheduler"])
        else:
            self._replay_schedule(state["global_step"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step_in_epoch, self.global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
        progress = state["progress"]
        self.skipped, self.failed_examples, self.elapsed = progress["skipped"], progress["failed_examples"], progress["elapsed"]
        self.best = {"top1": progress["best_top1"], "epoch": progress["best_epoch"]}
        self.loss_sum, self.loss_count = progress["loss_sum"], progress["loss_count"]
        saved_world = state["world_size"]
        if saved_world != self.dist.world_size:
            consumed = self.step_in_epoch * self.accumulate * self.config.train.batch_size * saved_world
            self.resume_start = consumed // self.dist.world_size
            self.echo(f"note: resuming on {self.dist.world_size} process(es) instead of {saved_world}; "
                      "the continuation is equivalent but not bit-identical")
        else:
            self.resume_start = state["sampler"]["start"]
        set_rng_state(state["rng"][self.dist.rank % len(state["rng"])])
        self.metrics.restore(self.global_step)
        self.echo(f"resumed from {path} (epoch {self.epoch + 1}, step {self.step_in_epoch}/{self.steps_per_epoch})")

    def _replay_schedule(self, steps: int) -> None:
        """A changed length or schedule: rebuild it and advance it to ``steps``, as if planned so."""
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        self.scheduler = build_scheduler(self.optimizer, self.config.schedule, self.steps_per_epoch,
                                         self.config.train.epochs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "step() before optimizer.step()"
            for _ in range(steps):
                self.scheduler.step()
        self.echo(f"note: learning-rate schedule rebuilt for the changed settings (lr now {self._lr():.4g})")

    def export(self, name: str, state: dict[str, torch.Tensor], top1: float | None) -> Path:
        """Weights with the metadata ``create_model``/``effnet predict`` read back.

        A grey model (``in_chans: 1``) records RGB statistics (its one value three times):
        predict, eval and serve decode images as RGB, and loading the file for 3 channels
        splits the grey stem into three thirds, so an image read as (x, x, x) gives exactly
        the grey model's input, and a colour image its channel mean.
        """
        path = self.output / name
        channels = 3 if self.plan.in_chans == 1 else self.plan.in_chans
        stats = {"mean": channel_stats(self.mean, channels), "std": channel_stats(self.std, channels)}
        shape = {key: getattr(self.config.model, key) for key in ("width_mult", "depth_mult")
                 if getattr(self.config.model, key) is not None}
        entry = WeightsEntry(
            name=f"{self.plan.name}.{self.run_name}", arch=self.plan.name, source="effnet",
            preprocessing=replace(self.eval_preprocessing, **stats), padding=self.model.padding,
            bn_eps=self.model.bn_eps, labels=tuple(self.data.class_names), num_classes=self.plan.num_classes,
            top1=None if top1 is None else round(100 * top1, 2), reported_by=f"effnet train ({self.run_name})",
            extra={"shape": shape} if shape else {},
        )
        write_safetensors(state, path, metadata_from_entry(entry, in_chans=self.plan.in_chans))
        return path

    # -- data to model input -------------------------------------------------------------
    def _prepare(self, images: torch.Tensor, augment: TrainAugment | None) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.data.in_memory:
            images = augment(images) if augment is not None else resize_batch(
                images, self.eval_size, self.config.data.interpolation
            )
        images = normalize_batch(to_unit_float(images), self.mean, self.std)
        if self.config.train.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    # -- evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float] | None:
        if self.data.val is None:
            return None
        loader = make_loader(self.data.val, ShardSampler(len(self.data.val), self.dist.rank, self.dist.world_size),
                             self.config.train.batch_size, self.config.data.workers, False, 0)
        model.eval()
        loss = correct1 = correct5 = count = 0.0
        for images, labels, _failed in loader:
            if images is None:
                continue
            labels = labels.to(self.device)
            with self._autocast():
                logits = model(self._prepare(images, None)).float()
            loss += float(F.cross_entropy(logits, labels, reduction="sum"))
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            correct1 += float((top[:, 0] == labels).sum())
            correct5 += float((top == labels[:, None]).any(dim=1).sum())
            count += len(labels)
        loss, correct1, correct5, count = self.dist.sum([loss, correct1, correct5, count], self.device)
        return {"loss": loss / max(count, 1), "top1": correct1 / max(count, 1), "top5": correct5 / max(count, 1)}

    # -- training --------------------------------------------------------------------------
    def _batches(self, augment_workers: int) -> Iterator[tuple[torch.Tensor | None, torch.Tensor, list[Any]]]:
        start = self.resume_start
        if start is None:
            start = self.step_in_epoch * self.accumulate * self.config.train.batch_size
        self.resume_start = None
        self.sampler.set_epoch(self.epoch, start)
        self.data.set_epoch(self.epoch)
        loader = make_loader(self.data.train, self.sampler, self.config.train.batch_size, augment_workers, True,
                             self.config.train.seed + self.epoch)
        return iter(loader)

    def _lr(self) -> float:
        return max(group["lr"] for group in self.optimizer.param_groups)

    def train_epoch(self, stage: Stage, stop: _StopFlag) -> dict[str, float]:
        config = self.config
        augment = self._train_augment(stage)
        self.data.set_train_augment(augment)
        mix = MixAugment(config.model.num_classes, stage.mixup_alpha, config.augment.cutmix_alpha)
        if stage.drop_rate is not None:
            self.model.dropout.p = stage.drop_rate
        set_train_mode(self.wrapped, config.model.freeze_bn_stats)
        batches = self._batches(config.data.workers)
        started, images_seen = time.perf_counter(), 0
        window_loss, window_count = 0.0, 0
        progress = progress_bar(total=self.steps_per_epoch, initial=self.step_in_epoch,
                                desc=f"epoch {self.epoch + 1}/{config.train.epochs}", unit="step", leave=True)
        micro = 0
        step_loss = torch.zeros((), device=self.device)
        while self.step_in_epoch < self.steps_per_epoch:
            images, labels, failed = next(batches)
            if failed:
                self.skipped += len(failed)
                self.failed_examples += [f"{f.path}: {f.reason}" for f in failed][: max(0, 10 - len(self.failed_examples))]
            if images is None:
                if self.dist.enabled:
                    raise EffnetError("every image of a batch failed to load; fix or remove them (see the list above)")
                continue
            inputs = self._prepare(images, augment if self.data.in_memory else None)
            inputs, targets = mix(inputs, labels.to(self.device, non_blocking=True))
            micro += 1
            last_micro = micro % self.accumulate == 0
            sync = contextlib.nullcontext() if last_micro or not self.dist.enabled else self.wrapped.no_sync()
            with sync:
                with self._autocast():
                    loss = self.criterion(self.forward(inputs), targets) / self.accumulate
                self.scaler.scale(loss).backward()
            step_loss += loss.detach()
            images_seen += len(labels)
            if not last_micro:
                continue
            self._optimizer_step()
            value = float(step_loss)
            step_loss.zero_()
            self.loss_sum += value
            self.loss_count += 1
            window_loss += value
            window_count += 1
            speed = images_seen * self.dist.world_size / max(time.perf_counter() - started, 1e-9)
            progress.update(1)
            progress.set_postfix(loss=f"{self.loss_sum / self.loss_count:.4f}", lr=f"{self._lr():.3g}",
                                 img_s=f"{speed:.1f}", refresh=False)
            if self.global_step % config.train.log_every == 0:
                self.metrics.add({"event": "step", "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                                  "step": self.global_step, "loss": window_loss / window_count, "lr": self._lr(),
                                  "img_per_s": speed})
                window_loss, window_count = 0.0, 0
            mid_epoch = self.step_in_epoch < self.steps_per_epoch
            every = config.train.checkpoint_every_steps
            if mid_epoch and every and self.global_step % every == 0:
                self.save_checkpoint()
            if self._stop_requested(stop):
                progress.close()
                self.elapsed += time.perf_counter() - started
                if mid_epoch:
                    self.save_checkpoint()
                    raise TrainingStopped(f"stopped at step {self.global_step}; continue with --resume")
                break
        progress.close()
        seconds = time.perf_counter() - started
        self.elapsed += seconds
        loss_sum, loss_count = self.dist.sum([self.loss_sum, float(self.loss_count)], self.device)
        return {"train_loss": loss_sum / max(loss_count, 1.0), "epoch_seconds": seconds,
                "img_per_s": images_seen * self.dist.world_size / max(seconds, 1e-9)}

    def _stop_requested(self, stop: _StopFlag) -> bool:
        if not self.dist.enabled:
            return stop.requested
        return self.dist.sum([1.0 if stop.requested else 0.0], self.device)[0] > 0

    def _optimizer_step(self) -> None:
        clip = self.config.optim.clip_grad_norm
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        if self.ema is not None and self.step_in_epoch % self.config.train.ema_every_steps == 0:
            self.ema.update_parameters(self.model)
        self.global_step += 1
        self.step_in_epoch += 1

    def _describe(self) -> None:
        config, plan = self.config, self.plan
        weights = config.model.weights or "random init"
        self.echo(
            f"{plan.name}: {sum(p.numel() for p in self.model.parameters()):,} params, weights {weights}, "
            f"{config.model.num_classes} classes, in_chans {config.model.in_chans}"
        )
        self.echo(
            f"data {config.data.source}: {len(self.data.train)} train / "
            f"{len(self.data.val) if self.data.val is not None else 0} val images, size {self.base_size} "
            f"(eval {self.eval_size}); {self.steps_per_epoch} steps/epoch x {config.train.epochs} epochs"
        )
        self.echo(
            f"{config.optim.name} lr {self.lr:.4g} (global batch {self.global_batch}), {config.schedule.name} "
            f"schedule; device {self.device.type} x {self.dist.world_size}, amp {config.train.amp}, "
            f"threads {torch.get_num_threads()}; output {self.output}"
        )

    def fit(self) -> dict[str, Any]:
        """Train to the configured end; returns the summary also written to ``summary.json``."""
        config = self.config
        self._describe()
        current_stage = None
        try:
            with _StopFlag() as stop:
                while self.epoch < config.train.epochs:
                    stage = stage_for_epoch(config, self.epoch, self.base_size)
                    if config.progressive is not None and stage != current_stage:
                        self.echo(f"stage {stage.index + 1}/{config.progressive.stages}: size {stage.image_size}, "
                                  f"RandAugment {stage.rand_augment_magnitude}, dropout {stage.drop_rate}, "
                                  f"mixup {stage.mixup_alpha}")
                    current_stage = stage
                    result = self.train_epoch(stage, stop)
                    self._end_epoch(result)
                    if stop.requested:
                        raise TrainingStopped(f"stopped after epoch {self.epoch}; continue with --resume")
            summary = self._finish()
            self.dist.barrier()  # every rank is done before any tears the group down
            return summary
        finally:
            self._release_process_group()

    def _release_process_group(self) -> None:
        """Drop the DDP wrapper (its reducer holds the process group) before destroying the
        group: a gloo group left for interpreter shutdown to free can abort the process
        ("terminate called without an active exception") after the run has succeeded."""
        if not self.dist.enabled:
            return
        self.wrapped = self.forward = self.model
        gc.collect()
        self.dist.close()

    def _end_epoch(self, result: dict[str, float]) -> None:
        config = self.config
        finished = self.epoch + 1
        record: dict[str, Any] = {"event": "epoch", "epoch": finished, "step": self.global_step, "lr": self._lr(),
                                  **result}
        if finished % config.train.eval_every == 0 or finished == config.train.epochs:
            for prefix, model in (("", self.model), ("ema_", self.ema.module if self.ema is not None else None)):
                scores = self.evaluate(model) if model is not None else None
                if scores:
                    record.update({f"{prefix}val_{k}": v for k, v in scores.items()})
            set_train_mode(self.wrapped, config.model.freeze_bn_stats)
        skipped_total = int(self.dist.sum([float(self.skipped)], self.device)[0])
        record.update(skipped_images=skipped_total, elapsed_seconds=self.elapsed)
        top1 = record.get("val_top1")
        if top1 is not None and (self.best["top1"] is None or top1 > self.best["top1"]):
            self.best = {"top1": top1, "epoch": finished}
            if self.dist.is_main:
                self.export("model_best.safetensors", self.model.state_dict(), top1)
        self.metrics.add(record)
        self.echo(self._epoch_line(record))
        if self.failed_examples:
            self.echo(f"  skipped unreadable images so far: {skipped_total} (e.g. {self.failed_examples[0]})")
        self.epoch, self.step_in_epoch = finished, 0
        self.loss_sum, self.loss_count = 0.0, 0
        self.save_checkpoint()

    @staticmethod
    def _epoch_line(record: dict[str, Any]) -> str:
        parts = [f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}", f"{record['img_per_s']:.1f} img/s"]
        if record.get("val_top1") is not None:
            parts.append(f"val loss {record['val_loss']:.4f} top-1 {100 * record['val_top1']:.2f}% "
                         f"top-5 {100 * record['val_top5']:.2f}%")
        if record.get("ema_val_top1") is not None:
            parts.append(f"EMA top-1 {100 * record['ema_val_top1']:.2f}%")
        return ", ".join(parts)

    def _finish(self) -> dict[str, Any]:
        epochs = self.metrics.epochs()
        last = epochs[-1] if epochs else {}
        summary = {
            "model": self.plan.name, "epochs": self.epoch, "steps": self.global_step,
            "final_val_top1": last.get("val_top1"), "final_ema_val_top1": last.get("ema_val_top1"),
            "best_val_top1": self.best["top1"], "best_epoch": self.best["epoch"],
            "train_seconds": self.elapsed, "skipped_images": last.get("skipped_images", self.skipped),
            "world_size": self.dist.world_size,
        }
        if self.dist.is_main:
            self.export("model.safetensors", self.model.state_dict(), last.get("val_top1"))
            if self.ema is not None:
                self.export("model_ema.safetensors", self.ema.module.state_dict(), last.get("ema_val_top1"))
            plot_curves(self.metrics.records, self.output / "curves.png", f"{self.plan.name} - {self.run_name}")
            with staged(self.output / "summary.json") as temporary:
                temporary.write_text(json.dumps(summary, indent=2) + "\n")
            best = "-" if self.best["top1"] is None else f"{100 * self.best['top1']:.2f}% (epoch {self.best['epoch']})"
            self.echo(f"done in {self.elapsed / 60:.1f} min: best val top-1 {best}; weights, metrics and "
                      f"curves.png in {self.output}")
        return summary


def train(config: Config, output: str | Path, *, resume: bool | str | Path = False,
          run_name: str = "run") -> dict[str, Any]:
    """Run (or resume) training to the end; the Python entry point behind ``effnet train``.

    ``resume``: True for the newest readable checkpoint in ``output``, or a checkpoint file."""
    return Trainer(config, output, resume=resume, run_name=run_name).fit()

