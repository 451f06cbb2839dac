"""The shipped recipes against the documents they come from, recipe inheritance (``base:``),
one-line errors for values out of range, and a two-step run of every new mechanism.

Sources: shared/reference/paddleclas-efficientnet.md (PaddleClas, pointing at
ppcls/configs/ImageNet/EfficientNet/EfficientNetB*.yaml), shared/reference/mindspore-efficientnet.md
(MindSpore, with mindvision's efficientnet_imagenet_train.py), shared/reference/efficientnet-v1-v2-explained.md
(V1 table, V2 efficientnetv2_params) and pytorch/vision references/classification/README.md
("EfficientNet-V2"). Line numbers are those of the shared/reference files.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from effnet.tasks.training.config import ConfigError, load_config
from effnet.tasks.training.engine import Trainer, stage_for_epoch

#: efficientnet-v1-v2-explained.md lines 173-180 (resolution, dropout) and paddleclas-efficientnet.md
#: lines 70-77 (Size); resize_short = S + 32 from ppcls/configs/ImageNet/EfficientNet/EfficientNetB<k>.yaml.
V1_VARIANTS = {1: (240, 0.2), 2: (260, 0.3), 3: (300, 0.3), 4: (380, 0.4), 5: (456, 0.4), 6: (528, 0.5),
               7: (600, 0.5)}


def test_paddleclas_b0_is_its_config_as_its_document_launches_it() -> None:
    """paddleclas-efficientnet.md line 110 names ppcls/configs/ImageNet/EfficientNet/ and the ResNet50
    launch (4 GPUs); EfficientNetB0.yaml: RMSProp momentum 0.9 rho 0.9 epsilon 0.001, Cosine 0.032
    warmup_epoch 5, L2 coeff 0.00001, 360 epochs, AutoAugment, CELoss epsilon 0.1, batch 128,
    ResizeImage resize_short 256 + CropImage 224 (cv2 bilinear)."""
    config = load_config("paddleclas_efficientnet_b0")
    optim, schedule, data = config.optim, config.schedule, config.data
    assert (optim.name, optim.momentum, optim.rmsprop_decay, optim.eps) == ("rmsprop_tf", 0.9, 0.9, 1e-3)
    assert optim.rmsprop_initial_square == 0.0  # Paddle's accumulators start at 0, TF's at 1
    assert (optim.weight_decay, optim.no_decay_bn_bias) == (1e-5, False)  # L2Decay on every parameter
    assert (optim.lr, optim.lr_reference_batch, config.train.batch_size) == (0.032, 4 * 128, 128)
    assert (schedule.name, schedule.warmup_epochs, schedule.warmup_start_factor, schedule.min_lr) == (
        "cosine", 5, 0.0, 0.0)
    assert not schedule.per_epoch  # by_epoch false
    assert (config.train.epochs, config.train.label_smoothing, config.train.ema_decay) == (360, 0.1, None)
    assert config.augment.auto_augment == "imagenet" and config.augment.hflip == 0.5
    assert (data.image_size, data.eval_size, data.eval_resize_size, data.interpolation) == (224, 224, 256, "bilinear")
    assert math.floor(224 / data.crop_fraction(224)) == 256
    model = config.model
    assert (model.padding, model.bn_eps, model.bn_momentum, model.drop_rate, model.drop_path_rate) == (
        "tf_same", 1e-3, pytest.approx(1 - 0.99), 0.2, 0.2)


@pytest.mark.parametrize("variant", sorted(V1_VARIANTS))
def test_paddleclas_b1_to_b7_change_only_size_and_dropout(variant: int) -> None:
    size, dropout = V1_VARIANTS[variant]
    config = load_config(f"paddleclas_efficientnet_b{variant}")
    assert config.model.name == f"efficientnet_b{variant}" and config.model.drop_rate == dropout
    assert (config.data.image_size, config.data.eval_size, config.data.eval_resize_size) == (size, size, size + 32)
    assert math.floor(size / config.data.crop_fraction(size)) == size + 32  # the resize the pipeline makes
    b0 = load_config("paddleclas_efficientnet_b0").model_dump()
    mine = config.model_dump()
    for dump in (b0, mine):
        del dump["model"]["name"], dump["model"]["drop_rate"]
        for key in ("image_size", "eval_size", "eval_resize_size"):
            del dump["data"][key]
    assert mine == b0  # optimizer, schedule, batch, augmentation: B0's (every EfficientNetB<k>.yaml)


def test_mindspore_b0_is_what_its_training_script_runs() -> None:
    """mindspore-efficientnet.md lines 81-93: 8 GPUs, --epoch_size 300 --keep_checkpoint_max 10
    --batch_size 64 --max_lr 0.1 --min_lr 0.0 --decay_epoch 300 --momentum 0.9 --resize 224
    --smooth_factor 0.1; the script: nn.RMSProp(momentum) with its defaults (decay 0.9, epsilon
    1e-10, no weight decay), nn.cosine_decay_lr (one lr per epoch), CrossEntropySmooth."""
    config = load_config("mindspore_efficientnet_b0")
    optim, schedule = config.optim, config.schedule
    assert (optim.name, optim.momentum, optim.rmsprop_decay, optim.eps, optim.weight_decay) == (
        "rmsprop_tf", 0.9, 0.9, 1e-10, 0.0)
    assert optim.rmsprop_initial_square is None  # rmsprop_tf's 1, as MindSpore's init='ones'
    assert (optim.lr, optim.lr_reference_batch, config.train.batch_size) == (0.1, 8 * 64, 64)
    assert (schedule.name, schedule.per_epoch, schedule.min_lr, schedule.warmup_epochs) == ("cosine", True, 0.0, 0)
    assert (config.train.epochs, config.train.keep_checkpoints) == (300, 10)
    data = config.data
    assert (data.image_size, data.eval_size, data.eval_resize_size, data.interpolation) == (224, 224, 256, "bilinear")
    assert (config.augment.crop_scale, config.augment.crop_ratio) == ((0.08, 1.0), (0.75, 1.333))
    assert config.augment.auto_augment is None and config.augment.rand_augment_magnitude is None


def test_mindspore_smoothing_gives_cross_entropy_smooth_targets() -> None:
    """CrossEntropySmooth(smooth_factor=0.1, classes_num=1000): one-hot with on 1 - 0.1 and off
    0.1 / 999; the recipe's torch label_smoothing must give the same loss."""
    smoothing = load_config("mindspore_efficientnet_b0").train.label_smoothing
    torch.manual_seed(0)
    logits, labels = torch.randn(4, 1000, dtype=torch.float64), torch.tensor([3, 999, 0, 512])
    targets = torch.full((4, 1000), 0.1 / 999, dtype=torch.float64).scatter_(1, labels[:, None], 1 - 0.1)
    mindspore = -(targets * logits.log_softmax(1)).sum(1).mean()
    ours = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
    torch.testing.assert_close(ours, mindspore, rtol=1e-12, atol=1e-12)


def test_the_sgd_recipe_name_says_where_it_went() -> None:
    with pytest.raises(ConfigError, match="renamed: use mindspore_efficientnet_b0.yaml"):
        load_config("efficientnet_b0_imagenet_sgd.yaml")


@pytest.mark.parametrize(("name", "line", "train_size", "eval_size", "dropout", "randaug", "mixup"), [
    ("efficientnetv2_s_imagenet_progressive", 320, 300, 384, 0.2, 10, 0.0),
    ("efficientnetv2_m_imagenet_progressive", 322, 384, 480, 0.3, 15, 0.2),
    ("efficientnetv2_l_imagenet_progressive", 324, 384, 480, 0.4, 20, 0.5),
])
def test_v2_recipes_end_at_the_explainers_values(name: str, line: int, train_size: int, eval_size: int,
                                                 dropout: float, randaug: int, mixup: float) -> None:
    """efficientnet-v1-v2-explained.md, the line given: (train_size, eval_size, dropout, randaug,
    mixup); RandAugment on TF's levels. First stage: the V2 paper's Table 6 (128, 5, 0.1, 0)."""
    config = load_config(name)
    assert config.progressive is not None and config.augment.rand_augment_scale == "tf"
    assert config.data.eval_size == eval_size
    first = stage_for_epoch(config, 0, train_size)
    last = stage_for_epoch(config, config.train.epochs - 1, train_size)
    assert (first.image_size, first.rand_augment_magnitude, first.drop_rate, first.mixup_alpha) == (128, 5, 0.1, 0)
    assert (last.image_size, last.rand_augment_magnitude, last.drop_rate, last.mixup_alpha) == (
        train_size, randaug, pytest.approx(dropout), pytest.approx(mixup))
    assert (config.progressive.stages, config.train.epochs, config.train.ema_decay) == (4, 350, 0.9999)


def test_torchvision_v2_s_is_the_readme_command() -> None:
    """pytorch/vision references/classification/README.md, EfficientNet-V2 (8 GPUs): --batch-size 128
    --lr 0.5 --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear
    --auto-augment ta_wide --epochs 600 --random-erase 0.1 --label-smoothing 0.1 --mixup-alpha 0.2
    --cutmix-alpha 1.0 --weight-decay 0.00002 --norm-weight-decay 0.0 --train-crop-size 300
    --model-ema --val-crop-size 384 --val-resize-size 384 --ra-sampler --ra-reps 4; train.py's
    defaults: sgd momentum 0.9, --lr-warmup-decay 0.01, --lr-min 0, per-epoch scheduler,
    --interpolation bilinear, --model-ema-steps 32, --model-ema-decay 0.99998."""
    config = load_config("torchvision_efficientnetv2_s")
    optim, schedule, augment, data, train = config.optim, config.schedule, config.augment, config.data, config.train
    assert (optim.name, optim.momentum, optim.lr, optim.lr_reference_batch, train.batch_size) == (
        "sgd", 0.9, 0.5, 8 * 128, 128)
    assert (optim.weight_decay, optim.no_decay_bn_bias, optim.norm_weight_decay) == (2e-5, False, 0.0)
    assert (schedule.name, schedule.per_epoch, schedule.warmup_epochs, schedule.warmup_start_factor,
            schedule.min_lr) == ("cosine", True, 5, 0.01, 0.0)
    assert (augment.auto_augment, augment.random_erase, augment.mixup_alpha, augment.cutmix_alpha) == (
        "ta_wide", 0.1, 0.2, 1.0)
    assert (train.epochs, train.label_smoothing, data.aug_repeats) == (600, 0.1, 4)
    assert (data.image_size, data.eval_size, data.eval_resize_size, data.interpolation) == (300, 384, 384, "bilinear")
    assert train.ema_every_steps == 32
    assert train.ema_decay == pytest.approx(1 - min(1.0, (1 - 0.99998) * 8 * 128 * 32 / 600), rel=1e-12)


# -- base: ------------------------------------------------------------------------------------------
def write(folder: Path, name: str, document: dict) -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(document))
    return path


DIGITS = {"model": {"name": "efficientnet_b0", "num_classes": 10, "in_chans": 1},
          "data": {"source": "digits", "image_size": 32}}


def test_base_sections_merge_key_by_key_and_overrides_come_last(tmp_path: Path) -> None:
    write(tmp_path, "parent.yaml", {**DIGITS, "train": {"epochs": 7, "batch_size": 16}})
    child = write(tmp_path, "child.yaml", {"base": "parent.yaml", "train": {"epochs": 9}})
    config = load_config(child, ["optim.lr=0.3"])
    assert (config.train.epochs, config.train.batch_size, config.optim.lr) == (9, 16, 0.3)
    assert config.model.in_chans == 1  # a section the child does not mention comes whole
    grandchild = write(tmp_path / "", "grandchild.yaml", {"base": str(child), "train": {"batch_size": 8}})
    assert (load_config(grandchild).train.epochs, load_config(grandchild).train.batch_size) == (9, 8)


def test_a_shipped_recipe_can_be_a_base(tmp_path: Path) -> None:
    mine = write(tmp_path, "mine.yaml", {"base": "paddleclas_efficientnet_b0", "train": {"epochs": 10}})
    config = load_config(mine)
    assert config.train.epochs == 10 and config.optim.lr == 0.032


@pytest.mark.parametrize(("document", "message"), [
    ({"base": "missing.yaml"}, "config 'missing.yaml' not found"),
    ({"base": ["a.yaml", "b.yaml"]}, r"base must name one recipe file, got \['a.yaml', 'b.yaml'\]"),
    ({"base": "loop.yaml"}, r"base recipes form a cycle \(loop.yaml -> loop.yaml\)"),
    ({"bsae": "x.yaml"}, r"unknown key 'bsae' \(did you mean 'base'\?\)"),
])
def test_base_mistakes_are_one_line(tmp_path: Path, document: dict, message: str) -> None:
    path = write(tmp_path, "loop.yaml", {**DIGITS, **document})
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path)
    assert "\n" not in str(caught.value)


# -- values out of range: one line each -------------------------------------------------------------
@pytest.mark.parametrize(("recipe", "override", "message"), [
    ("efficientnetv2_s_imagenet_progressive", "augment.rand_augment_magnitude=25",
     "augment.rand_augment_magnitude 25 is outside TensorFlow's levels 0 < level <= 20"),
    ("efficientnetv2_s_imagenet_progressive", "progressive.rand_augment_magnitude=[5, 21]",
     "progressive.rand_augment_magnitude 21 is outside TensorFlow's levels"),
    ("finetune_lite0_folder", "augment.rand_augment_magnitude=30",
     r"outside kornia's scale 0 < m < 30 \(TensorFlow level L is kornia m = 3L"),
    ("torchvision_efficientnetv2_s", "augment.random_erase=1.5", "augment.random_erase: Input should be less than"),
    ("torchvision_efficientnetv2_s", "data.aug_repeats=0", "data.aug_repeats: Input should be greater than or equal"),
    ("torchvision_efficientnetv2_s", "optim.no_decay_bn_bias=true", "optim.norm_weight_decay needs optim.no_decay"),
    ("torchvision_efficientnetv2_s", "schedule.warmup_epochs=2.5", "per_epoch counts whole epochs: schedule.warmup"),
    ("torchvision_efficientnetv2_s", "train.ema_every_steps=0", "train.ema_every_steps: Input should be greater"),
    ("torchvision_efficientnetv2_s", "data.eval_resize_size=300", "eval_resize_size 300 is smaller than the crop"),
    ("torchvision_efficientnetv2_s", "data.eval_crop_fraction=0.9", "choose one of data.eval_resize_size and"),
    ("torchvision_efficientnetv2_s", "augment.auto_augment=ta_narrow", "augment.auto_augment: Input should be"),
    ("paddleclas_efficientnet_b0", "optim.name=sgd", "rmsprop_initial_square applies to rmsprop and rmsprop_tf"),
    ("paddleclas_efficientnet_b0", "schedule.warmup_start_factor=-0.1", "warmup_start_factor: Input should be greater"),
    ("paddleclas_efficientnet_b0", "model.padding=same", "model.padding: Input should be 'symmetric' or 'tf_same'"),
    ("paddleclas_efficientnet_b0", "model.bn_eps=0", "model.bn_eps: Input should be greater than 0"),
    ("mindspore_efficientnet_b0", "train.bce_target_threshold=0.2", "bce_target_threshold applies to train.loss"),
    ("mindspore_efficientnet_b0", "train.loss=focal", "train.loss: Input should be 'cross_entropy' or 'bce'"),
    ("mindspore_efficientnet_b0", "schedule.name=piecewise", "milestones and schedule.values go with"),
    ("mindspore_efficientnet_b0", "schedule.milestones=[100, 300]", "milestones and schedule.values go with"),
])
def test_a_value_out_of_range_is_one_line(recipe: str, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(recipe, [override])
    assert "\n" not in str(caught.value)


PIECEWISE = ["schedule.name=piecewise", "schedule.per_epoch=false"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["schedule.milestones=[100, 300]", "schedule.values=[0.1]"], r"milestones \(2\) and schedule.values \(1\)"),
    (["schedule.milestones=[200, 100, 300]", "schedule.values=[0.1, 0.01, 0.001]"], "must rise from above 0"),
    (["schedule.milestones=[100, 300]", "schedule.values=[0.1, 0]"], "schedule.values must be above 0"),
    (["schedule.milestones=[100, 300]", "schedule.values=[0.2, 0.01]"], r"values\[0\] 0.2 must equal optim.lr 0.1"),
    (["schedule.milestones=[100, 250]", "schedule.values=[0.1, 0.01]"], "last of schedule.milestones .250. must be"),
])
def test_piecewise_schedule_is_checked(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config("mindspore_efficientnet_b0", PIECEWISE + overrides)
    good = load_config("mindspore_efficientnet_b0", PIECEWISE + ["schedule.milestones=[100, 300]",
                                                                 "schedule.values=[0.1, 0.01]"])
    assert good.schedule.milestones == (100, 300)


# -- two steps of every new mechanism ------------------------------------------------------------------
#: tests/tasks/test_train.py's tiny B0 on the digits, RGB (the policies need three channels), one
#: epoch of two steps: 359 training digits (val_fraction 0.8) in batches of 128; with repeated
#: augmentation an epoch is 359 // 256 * 256 = 256 samples, two batches as well.
TINY = ["model.width_mult=0.25", "model.depth_mult=0.25", "model.num_classes=10", "model.in_chans=3",
        "data.source=digits", "data.val_fraction=0.8", "data.image_size=16", "data.eval_size=16",
        "data.workers=0", "train.epochs=1", "train.batch_size=128", "train.checkpoint_every_steps=null",
        "train.log_every=1"]


def two_steps(tmp_path: Path, recipe: str, overrides: list[str]) -> Trainer:
    trainer = Trainer(load_config(recipe, TINY + overrides), tmp_path / "run", echo=lambda _line: None)
    summary = trainer.fit()
    assert summary["steps"] == 2 and trainer.steps_per_epoch == 2
    assert all(math.isfinite(record["loss"]) for record in trainer.metrics.records if record["event"] == "step")
    return trainer


def test_paddleclas_recipe_runs(tmp_path: Path) -> None:
    """RMSProp from a zero mean square, L2 on every parameter, warm-up from 0, TF padding and
    BatchNorm epsilon, AutoAugment, the resize-short evaluation."""
    trainer = two_steps(tmp_path, "paddleclas_efficientnet_b0", ["data.eval_resize_size=20"])
    assert trainer.eval_preprocessing.crop_fraction == pytest.approx(16 / 20)
    assert trainer.model.padding.value == "tf_same" and trainer.model.bn1.eps == 1e-3
    assert all(group["weight_decay"] == 1e-5 for group in trainer.optimizer.param_groups)


def next_lrs(trainer: Trainer) -> list[float]:
    """The learning rate each step record holds: the one set for the step after it."""
    return [record["lr"] for record in trainer.metrics.records if record["event"] == "step"]


def test_mindspore_recipe_runs_one_lr_per_epoch(tmp_path: Path) -> None:
    trainer = two_steps(tmp_path, "mindspore_efficientnet_b0", ["data.eval_resize_size=20"])
    # cosine_decay_lr over this 1-epoch run: epoch 0 at max_lr for both steps, then min_lr 0
    assert next_lrs(trainer) == [trainer.lr, 0.0]


def test_torchvision_recipe_runs(tmp_path: Path) -> None:
    """TrivialAugmentWide, random erasing, repeated augmentation, mixup/cutmix, norm-only decay
    exemption, per-epoch warm-up, EMA every 32nd step (so once in two steps)."""
    trainer = two_steps(tmp_path, "torchvision_efficientnetv2_s", ["data.eval_resize_size=16"])
    assert trainer.sampler.repeats == 4 and trainer.sampler.num_samples == 256
    assert trainer.ema is not None and int(trainer.ema.n_averaged) == 1
    decays = {group["weight_decay"] for group in trainer.optimizer.param_groups}
    assert decays == {0.0, 2e-5}


def test_v2_progressive_recipe_runs_tf_level_rand_augment(tmp_path: Path) -> None:
    trainer = two_steps(tmp_path, "efficientnetv2_m_imagenet_progressive", ["progressive.image_size=[16, 24]"])
    augment = trainer._train_augment(stage_for_epoch(trainer.config, 0, 16))
    assert type(augment.policy).__name__ == "RandAugment"


def test_piecewise_schedule_and_bce_loss_run(tmp_path: Path) -> None:
    trainer = two_steps(tmp_path, "mindspore_efficientnet_b0", [
        "schedule.name=piecewise", "schedule.per_epoch=false", "schedule.milestones=[0.5, 1]",
        "schedule.values=[0.1, 0.01]", "train.loss=bce", "train.bce_target_threshold=0.2",
        "data.eval_resize_size=20"])
    assert next_lrs(trainer) == pytest.approx([trainer.lr * 0.1, trainer.lr * 0.1])  # the second piece
    assert type(trainer.criterion).__name__ == "BinaryCrossEntropy"
