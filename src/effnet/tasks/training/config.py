"""Training recipes as validated YAML: one schema, clear one-line errors, ``key=value`` overrides.

Every section forbids unknown keys, so a misspelt ``train.epoch`` is an error that lists the
valid keys and suggests the closest one instead of being silently ignored (the classic way
a recipe "trains" without the setting its author thought it had).

A recipe may start from another with a top-level ``base: other.yaml`` (a path beside it, or
a shipped name): its sections are merged key by key under the recipe's own, so a family of
recipes (B1-B7 of one framework) states only what differs from its B0.
"""

from __future__ import annotations

import difflib
import math
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
    bn_eps: float | None = Field(None, gt=0, lt=1, description="BatchNorm epsilon; null: the weights' (random: 1e-5)")
    padding: Literal["symmetric", "tf_same"] | None = Field(
        None, description="convolution padding; null: the weights' (random init symmetric)")
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
    eval_resize_size: int | None = Field(
        None, ge=8, description="shorter side before the centre crop of eval_size (PaddleClas' resize_short, "
                                "torchvision's --val-resize-size); sets the crop fraction")
    interpolation: Literal["bilinear", "bicubic", "nearest"] = "bicubic"
    mean: tuple[float, ...] | None = Field(None, description="null: the weights' or ImageNet's")
    std: tuple[float, ...] | None = None
    workers: int = Field(4, ge=0)
    val_fraction: float = Field(0.2, gt=0, lt=1, description="digits: held-out share")
    split_seed: int = Field(0, description="digits: seed of the stratified split")
    aug_repeats: int = Field(
        1, ge=1, le=16, description="repeated augmentation: every image this many times an epoch, each copy on "
                                    "another process (torchvision's --ra-reps); 1: off")

    @model_validator(mode="after")
    def _one_crop_setting(self) -> "DataConfig":
        if self.eval_resize_size is not None and self.eval_crop_fraction is not None:
            raise ValueError("choose one of data.eval_resize_size and data.eval_crop_fraction")
        if self.eval_resize_size is not None and self.eval_size is not None and self.eval_resize_size < self.eval_size:
            raise ValueError(f"data.eval_resize_size {self.eval_resize_size} is smaller than the crop "
                             f"data.eval_size {self.eval_size}")
        return self

    def crop_fraction(self, eval_size: int) -> float | None:
        """The centre crop's share of the resized image's shorter side; null: the weights' own.

        ``eval_resize_size`` R becomes ``eval_size / R``, nudged down where float rounding
        would make the pipeline's ``floor(eval_size / fraction)`` land one pixel below R.
        """
        if self.eval_resize_size is None:
            return self.eval_crop_fraction
        fraction = eval_size / self.eval_resize_size
        while math.floor(eval_size / fraction) < self.eval_resize_size:
            fraction = math.nextafter(fraction, 0.0)
        return fraction


#: RandAugment magnitude scales: (top, top allowed, meaning). kornia's m is its own (0, 30);
#: TensorFlow's levels reach an operation's full range at 10 and, as in TF's code, grow past it
#: up to 20, where kornia's posterize reaches 0 bits.
RAND_AUGMENT_SCALES = {
    "kornia": (30.0, False, "kornia's scale 0 < m < 30 (TensorFlow level L is kornia m = 3L; "
                            "levels go with augment.rand_augment_scale: tf)"),
    "tf": (20.0, True, "TensorFlow's levels 0 < level <= 20 (10 is each operation's full range)"),
}


class AugmentConfig(Section):
    """Training augmentation (kornia)."""

    crop_scale: Pair = (0.08, 1.0)
    crop_ratio: Pair = (3 / 4, 4 / 3)
    hflip: float = Field(0.5, ge=0, le=1)
    auto_augment: Literal["imagenet", "cifar10", "svhn", "ta_wide"] | None = Field(
        None, description="AutoAugment policy, or ta_wide: TrivialAugmentWide (torchvision's --auto-augment)")
    rand_augment_ops: int = Field(2, ge=1)
    rand_augment_magnitude: float | None = Field(None, gt=0, description="null: no RandAugment")
    rand_augment_scale: Literal["kornia", "tf"] = Field(
        "kornia", description="kornia: kornia's m (0-30); tf: TensorFlow's level (0-10 = each operation's range)")
    random_erase: float = Field(0.0, ge=0, le=1, description="probability of erasing a box (filled with the mean)")
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
    rmsprop_initial_square: float | None = Field(
        None, ge=0, description="RMSProp's mean square at the start: TF and MindSpore 1, Paddle and torch 0; "
                                "null: rmsprop_tf 1, rmsprop 0")
    betas: Pair = (0.9, 0.999)
    no_decay_bn_bias: bool = True
    norm_weight_decay: float | None = Field(
        None, ge=0, description="weight decay of BatchNorm weights and biases (torchvision's --norm-weight-decay); "
                                "needs no_decay_bn_bias: false")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise lr decay per stage")
    clip_grad_norm: float | None = Field(None, gt=0)
    accumulate_steps: int = Field(1, ge=1)
    implementation: Literal["auto", "fused", "foreach", "for_loop"] = "auto"

    @model_validator(mode="after")
    def _rmsprop_only(self) -> "OptimConfig":
        if self.rmsprop_initial_square is not None and self.name not in ("rmsprop", "rmsprop_tf"):
            raise ValueError(f"optim.rmsprop_initial_square applies to rmsprop and rmsprop_tf, not {self.name}")
        if self.norm_weight_decay is not None and self.no_decay_bn_bias:
            raise ValueError("optim.norm_weight_decay needs optim.no_decay_bn_bias: false "
                             "(which exempts every BatchNorm parameter and bias)")
        return self


class ScheduleConfig(Section):
    """Learning-rate schedule, stepped every optimizer step or, with ``per_epoch``, every epoch."""

    name: Literal["cosine", "step", "constant", "piecewise"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_start_factor: float = Field(0.01, ge=0, le=1, description="0: from zero (PaddleClas' LinearWarmup)")
    min_lr: float = Field(0.0, ge=0)
    decay_rate: float = Field(0.97, gt=0, le=1)
    decay_epochs: float = Field(2.4, gt=0)
    milestones: tuple[float, ...] | None = Field(
        None, description="piecewise: the epoch each value ends at, the last one train.epochs (MindSpore's milestone)")
    values: tuple[float, ...] | None = Field(
        None, description="piecewise: the learning rates, values[0] = optim.lr (MindSpore's learning_rates)")
    per_epoch: bool = Field(False, description="hold the lr for whole epochs (MindSpore's dynamic lr, torchvision)")

    @model_validator(mode="after")
    def _consistent(self) -> "ScheduleConfig":
        piecewise = self.name == "piecewise"
        if piecewise != (self.milestones is not None) or piecewise != (self.values is not None):
            raise ValueError("schedule.milestones and schedule.values go with schedule.name: piecewise, and it "
                             "needs both")
        if piecewise:
            milestones, values = self.milestones or (), self.values or ()
            if not milestones or len(milestones) != len(values):
                raise ValueError(f"schedule.milestones ({len(milestones)}) and schedule.values ({len(values)}) "
                                 "need one entry each per piece")
            if any(b <= a for a, b in zip((0.0, *milestones), milestones)):
                raise ValueError(f"schedule.milestones must rise from above 0, got {list(milestones)}")
            if min(values) <= 0:
                raise ValueError(f"schedule.values must be above 0, got {list(values)}")
        if self.per_epoch:
            whole = {"warmup_epochs": [self.warmup_epochs], "milestones": list(self.milestones or ())}
            if self.name == "step":
                whole["decay_epochs"] = [self.decay_epochs]
            for key, numbers in whole.items():
                if any(n != int(n) for n in numbers):
                    raise ValueError(f"schedule.per_epoch counts whole epochs: schedule.{key} must be whole, "
                                     f"got {numbers if len(numbers) > 1 else numbers[0]}")
        return self


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
    loss: Literal["cross_entropy", "bce"] = Field(
        "cross_entropy", description="bce: binary cross-entropy per class (timm's BinaryCrossEntropy)")
    bce_target_threshold: float | None = Field(
        None, ge=0, lt=1, description="bce: targets above this become 1, the rest 0 (timm's --bce-target-thresh)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = True
    compile: bool = False
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null: torch's default")
    ema_decay: float | None = Field(None, gt=0, lt=1)
    ema_every_steps: int = Field(1, ge=1, description="update the EMA every this many steps of an epoch "
                                                      "(torchvision's --model-ema-steps)")
    eval_every: int = Field(1, ge=1, description="epochs")
    checkpoint_every_steps: int | None = Field(None, ge=1, description="also save mid-epoch")
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(20, ge=1, description="steps between JSONL step records")

    @model_validator(mode="after")
    def _bce_only(self) -> "TrainConfig":
        if self.bce_target_threshold is not None and self.loss != "bce":
            raise ValueError("train.bce_target_threshold applies to train.loss: bce")
        return self


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
        self._check_rand_augment()
        self._check_schedule()
        for name in ("mean", "std"):
            value = getattr(data, name)
            if value is not None and len(value) not in (1, self.model.in_chans):
                raise ValueError(f"data.{name} needs 1 or model.in_chans={self.model.in_chans} values")
        return self

    def _check_rand_augment(self) -> None:
        scale = self.augment.rand_augment_scale
        top, top_allowed, meaning = RAND_AUGMENT_SCALES[scale]
        magnitudes = {"augment.rand_augment_magnitude": (self.augment.rand_augment_magnitude,)}
        if self.progressive and self.progressive.rand_augment_magnitude:
            magnitudes["progressive.rand_augment_magnitude"] = self.progressive.rand_augment_magnitude
        for key, values in magnitudes.items():
            for value in values:
                off = value is None or (value == 0 and key.startswith("progressive"))  # a stage without it
                if not off and not (0 < value < top or (top_allowed and value == top)):
                    raise ValueError(f"{key} {value:g} is outside {meaning}")

    def _check_schedule(self) -> None:
        schedule = self.schedule
        if schedule.name != "piecewise" or not schedule.values or not schedule.milestones:
            return
        if not math.isclose(schedule.values[0], self.optim.lr, rel_tol=1e-9):
            raise ValueError(f"schedule.values[0] {schedule.values[0]:g} must equal optim.lr {self.optim.lr:g}: "
                             "the piecewise schedule starts at the optimizer's learning rate")
        if schedule.milestones[-1] != self.train.epochs:
            raise ValueError(f"the last of schedule.milestones ({schedule.milestones[-1]:g}) must be train.epochs "
                             f"({self.train.epochs}): the schedule must cover the run")


SECTIONS: dict[str, type[Section]] = {
    "model": ModelConfig, "data": DataConfig, "augment": AugmentConfig, "optim": OptimConfig,
    "schedule": ScheduleConfig, "train": TrainConfig, "progressive": ProgressiveConfig,
}


#: Recipes that shipped under another name: the old name says where it went.
RENAMED = {"efficientnet_b0_imagenet_sgd.yaml": "mindspore_efficientnet_b0.yaml (MindSpore runs RMSProp, not SGD)"}


def shipped_configs() -> list[str]:
    """Names of the recipes that ship inside the package (``configs/*.yaml``)."""
    folder = resources.files("effnet") / "configs"
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".yaml"))


def locate_config(name: str, beside: Path | None = None) -> Path:
    """A path as given (or, for a ``base:``, beside the recipe naming it), else a shipped recipe
    by file name (``configs/`` prefix and suffix optional)."""
    path = Path(name).expanduser()
    for candidate in ([beside / path] if beside is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_file():
            return candidate
    stem = Path(name).name
    stem = stem if stem.endswith(".yaml") else f"{stem}.yaml"
    shipped = resources.files("effnet") / "configs" / stem
    if shipped.is_file():
        return Path(str(shipped))
    if stem in RENAMED:
        raise ConfigError(f"config '{name}' was renamed: use {RENAMED[stem]}")
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
        return "top level", ["base", *SECTIONS]
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
        elif not dotted or (len(location) == 1 and isinstance(item.get("input"), dict)):  # a section's own check
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


def read_yaml(path: Path) -> dict[str, Any]:
    """One recipe file as a mapping of sections; a YAML error names the line."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (a recipe is YAML)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model:, data:, train: ...)")
    return raw


def merged(base: dict[str, Any], recipe: dict[str, Any]) -> dict[str, Any]:
    """``recipe`` over ``base``: sections merge key by key, any other value replaces the base's."""
    out = dict(base)
    for key, value in recipe.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_recipe(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe with its ``base:`` chain resolved (the base found beside it or among the shipped ones)."""
    raw = read_yaml(path)
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path.name}: base must name one recipe file, got {base!r}")
    base_path = locate_config(base, beside=path.parent)
    chain = (*chain, path.resolve())
    if base_path.resolve() in chain:
        cycle = " -> ".join(p.name for p in (*chain, base_path))
        raise ConfigError(f"{path.name}: base recipes form a cycle ({cycle})")
    return merged(read_recipe(base_path, chain), raw)


def load_config(name: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a YAML recipe (a path or a shipped name) and its ``base:`` chain, apply ``key=value``
    overrides, validate."""
    path = locate_config(str(name))
    return build_config(apply_overrides(read_recipe(path), list(overrides or [])), str(path.name))


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
