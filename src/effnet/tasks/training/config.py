"""Training recipes as validated YAML: one schema, clear one-line errors, ``key=value`` overrides.

Every section forbids unknown keys, so a misspelt ``train.epoch`` is an error that lists the
valid keys and suggests the closest one instead of being silently ignored (the classic way
a recipe "trains" without the setting its author thought it had).
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ...errors import UsageError

Pair = tuple[float, float]


class ConfigError(UsageError):
    """A recipe that cannot be used as written; the message is one line."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Section):
    """What to build and where its starting weights come from."""

    name: str = "efficientnet_b0"
    weights: str | None = Field(None, description="registry entry/tag, 'default', or a file; null: random init")
    num_classes: int = Field(1000, ge=1)
    in_chans: int = Field(3, ge=1)
    drop_rate: float | None = Field(None, ge=0, lt=1, description="classifier dropout; null: the variant's")
    drop_path_rate: float | None = Field(None, ge=0, lt=1, description="stochastic depth; null: 0.2")
    width_mult: float | None = Field(None, gt=0)
    depth_mult: float | None = Field(None, gt=0)
    bn_momentum: float | None = Field(None, gt=0, lt=1, description="torch convention: TF's 0.99 is 0.01")
    global_pool: Literal["avg", "max", "avgmax"] = "avg"
    head_init_scale: float | None = Field(None, ge=0, description="scale the new classifier's initial weights")
    grad_checkpointing: bool = False
    freeze_bn_stats: bool = Field(False, description="BatchNorm uses running statistics while training")
    sync_bn: bool = Field(True, description="SyncBatchNorm across processes (CUDA only)")


class DataConfig(Section):
    """Where images come from and how evaluation preprocesses them."""

    source: Literal["image_folder", "digits"] = "image_folder"
    train_dir: str | None = None
    val_dir: str | None = None
    class_map: str | None = None
    image_size: int | None = Field(None, ge=8, description="training size; null: the variant's")
    eval_size: int | None = Field(None, ge=8, description="evaluation size; null: the variant's")
    eval_crop_fraction: float | None = Field(None, gt=0, le=1, description="null: the weights' or 0.875")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bicubic"
    mean: tuple[float, ...] | None = Field(None, description="null: the weights' or ImageNet's")
    std: tuple[float, ...] | None = None
    workers: int = Field(4, ge=0)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="digits: held-out share")
    split_seed: int = Field(0, description="digits: seed of the stratified split")


class AugmentConfig(Section):
    """Training augmentation (kornia); magnitudes are on kornia's 0-30 scale."""

    crop_scale: Pair = (0.08, 1.0)
    crop_ratio: Pair = (3 / 4, 4 / 3)
    hflip: float = Field(0.5, ge=0, le=1)
    auto_augment: Literal["imagenet", "cifar10", "svhn"] | None = None
    rand_augment_ops: int = Field(2, ge=1)
    rand_augment_magnitude: float | None = Field(None, gt=0, lt=30, description="null: no RandAugment")
    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)


class OptimConfig(Section):
    """Optimizer and its parameter groups."""

    name: Literal["sgd", "rmsprop_tf", "rmsprop", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0)
    lr_reference_batch: int | None = Field(None, ge=1, description="lr is per this global batch; scaled linearly")
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(1e-5, ge=0)
    rmsprop_decay: float = Field(0.9, gt=0, lt=1)
    eps: float | None = Field(None, gt=0, description="null: the optimizer's default (rmsprop_tf: 1e-3)")
    betas: Pair = (0.9, 0.999)
    no_decay_bn_bias: bool = True
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise lr decay per stage")
    clip_grad_norm: float | None = Field(None, gt=0)
    accumulate_steps: int = Field(1, ge=1)
    implementation: Literal["auto", "fused", "foreach", "for_loop"] = "auto"


class ScheduleConfig(Section):
    """Learning-rate schedule, stepped every optimizer step."""

    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_start_factor: float = Field(0.01, gt=0, le=1)
    min_lr: float = Field(0.0, ge=0)
    decay_rate: float = Field(0.97, gt=0, le=1)
    decay_epochs: float = Field(2.4, gt=0)


class ProgressiveConfig(Section):
    """EfficientNetV2 progressive learning: settings grow linearly from first to last stage."""

    stages: int = Field(4, ge=2)
    image_size: tuple[int, int]
    rand_augment_magnitude: Pair | None = None
    drop_rate: Pair | None = None
    mixup_alpha: Pair | None = None


class TrainConfig(Section):
    """The loop: length, batch, precision, EMA, evaluation and checkpoints."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1, description="per process")
    seed: int = 0
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = True
    compile: bool = False
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null: torch's default")
    ema_decay: float | None = Field(None, gt=0, lt=1)
    eval_every: int = Field(1, ge=1, description="epochs")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="also save mid-epoch")
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(20, ge=1, description="steps between JSONL step records")


class Config(Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    progressive: ProgressiveConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        data, augment = self.data, self.augment
        if data.source == "image_folder" and not data.train_dir:
            raise ValueError("data.train_dir is required with data.source: image_folder")
        if data.source == "image_folder" and self.model.in_chans != 3:
            raise ValueError("data.source image_folder decodes RGB images: model.in_chans must be 3")
        if data.source == "digits" and self.model.num_classes != 10:
            raise ValueError("data.source digits has 10 classes: set model.num_classes: 10")
        policy = augment.auto_augment or augment.rand_augment_magnitude or (
            self.progressive and self.progressive.rand_augment_magnitude
        )
        if policy and self.model.in_chans != 3:
            raise ValueError("auto_augment/rand_augment need RGB input (model.in_chans: 3)")
        if augment.auto_augment and augment.rand_augment_magnitude:
            raise ValueError("choose one of augment.auto_augment and augment.rand_augment_magnitude")
        for name in ("mean", "std"):
            value = getattr(data, name)
            if value is not None and len(value) not in (1, self.model.in_chans):
                raise ValueError(f"data.{name} needs 1 or model.in_chans={self.model.in_chans} values")
        return self


SECTIONS: dict[str, type[Section]] = {
    "model": ModelConfig, "data": DataConfig, "augment": AugmentConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "train": TrainConfig, "progressive": ProgressiveConfig,
}


def shipped_configs() -> list[str]:
    """Names of the recipes that ship inside the package (``configs/*.yaml``)."""
    folder = resources.files("effnet") / "configs"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))


def locate_config(name: str) -> Path:
    """A path as given, else a shipped recipe by file name (``configs/`` prefix and suffix optional)."""
    path = Path(name).expanduser()
    if path.is_file():
        return path
    stem = Path(name).name
    stem = stem if stem.endswith(".yaml") else f"{stem}.yaml"
    shipped = resources.files("effnet") / "configs" / stem
    if shipped.is_file():
        return Path(str(shipped))
    close = difflib.get_close_matches(stem, shipped_configs(), n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    raise ConfigError(f"config '{name}' not found.{hint} Shipped recipes: {', '.join(shipped_configs())}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``optim.lr=0.01`` -> (["optim", "lr"], 0.01); the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' is not key=value (e.g. train.epochs=5)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = raw
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override '{text}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return raw


def _valid_keys(location: tuple[Any, ...]) -> tuple[str, list[str]]:
    """The section a bad key sits in and the keys that section accepts."""
    if len(location) == 1:
        return "top level", list(SECTIONS)
    section = SECTIONS.get(str(location[0]))
    return str(location[0]), list(section.model_fields) if section else []


def describe_errors(error: ValidationError) -> str:
    """Pydantic's report as one line: where, what, and for unknown keys what was meant."""
    messages: list[str] = []
    for item in error.errors():
        location = tuple(p for p in item["loc"] if not isinstance(p, int))
        dotted = ".".join(str(p) for p in location)
        if item["type"] == "extra_forbidden":
            where, valid = _valid_keys(location)
            close = difflib.get_close_matches(str(location[-1]), valid, n=1)
            hint = f" (did you mean '{'.'.join([*map(str, location[:-1]), close[0]])}'?)" if close else ""
            messages.append(f"unknown key '{dotted}'{hint}; valid keys in {where}: {', '.join(valid)}")
        elif not dotted:
            messages.append(item["msg"].removeprefix("Value error, "))
        else:
            got = item.get("input")
            shown = f" (got {got!r})" if not isinstance(got, dict) else ""
            messages.append(f"{dotted}: {item['msg'].removeprefix('Value error, ')}{shown}")
    return "; ".join(messages)


def build_config(raw: dict[str, Any], origin: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{origin}: {describe_errors(error)}") from None


def load_config(name: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (a path or a shipped name), apply ``key=value`` overrides, validate."""
    path = locate_config(str(name))
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, train: ...)")
    return build_config(apply_overrides(raw, list(overrides or [])), str(path.name))


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_differences(old: Config, new: Config) -> list[str]:
    """``section.key: old -> new`` for every setting that differs (for resume notes)."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    changes: list[str] = []
    for section in SECTIONS:
        a, b = before.get(section) or {}, after.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                changes.append(f"{section}.{key}: {a.get(key)} -> {b.get(key)}")
    return changes
