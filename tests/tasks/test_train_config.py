"""Training recipes: validation errors, overrides, and the shipped recipes against their papers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from effnet.tasks.training.config import (
    ConfigError,
    config_differences,
    config_to_yaml,
    load_config,
    shipped_configs,
)
from effnet.tasks.training.engine import stage_for_epoch


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


DIGITS = {"model": {"name": "lite0", "num_classes": 10, "in_chans": 1}, "data": {"source": "digits", "image_size": 32}}


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_recipe_validates_and_round_trips(name: str) -> None:
    config = load_config(name)
    assert load_config(name.removesuffix(".yaml")) == config
    again = yaml.safe_load(config_to_yaml(config))
    assert again["train"]["epochs"] == config.train.epochs


def test_the_required_recipes_ship() -> None:
    shipped = set(shipped_configs())
    assert {"mindspore_efficientnet_b0.yaml", "efficientnet_b0_imagenet_paper.yaml",
            "efficientnetv2_s_imagenet_progressive.yaml", "digits_finetune_lite0.yaml",
            "torchvision_efficientnetv2_s.yaml"} <= shipped
    assert {f"paddleclas_efficientnet_b{k}.yaml" for k in range(8)} <= shipped
    assert {f"efficientnetv2_{k}_imagenet_progressive.yaml" for k in "sml"} <= shipped
    assert any(name.startswith("digits_scratch_") for name in shipped)


def test_misspelt_key_is_one_line_listing_the_valid_keys(tmp_path: Path) -> None:
    path = write(tmp_path, {**DIGITS, "train": {"epoch": 3}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "unknown key 'train.epoch' (did you mean 'train.epochs'?)" in message
    assert "valid keys in train: epochs, batch_size" in message


def test_misspelt_section_and_override_are_reported(tmp_path: Path) -> None:
    path = write(tmp_path, DIGITS)
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\)"):
        load_config(path, ["trian.epochs=3"])
    with pytest.raises(ConfigError, match=r"optim.lr: Input should be greater than 0 \(got -1\)"):
        load_config(path, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="is not key=value"):
        load_config(path, ["train.epochs"])


def test_overrides_are_read_as_yaml(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, DIGITS),
                         ["train.epochs=7", "optim.lr=1e-3", "augment.crop_scale=[0.5, 1.0]", "train.ema_decay=null"])
    assert config.train.epochs == 7
    assert config.optim.lr == pytest.approx(1e-3)
    assert config.augment.crop_scale == (0.5, 1.0)
    assert config.train.ema_decay is None


def test_inconsistent_settings_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="digits has 10 classes"):
        load_config(write(tmp_path, {**DIGITS, "model": {"name": "lite0", "in_chans": 1}}))
    with pytest.raises(ConfigError, match="need RGB input"):
        load_config(write(tmp_path, {**DIGITS, "augment": {"auto_augment": "imagenet"}}))
    with pytest.raises(ConfigError, match="data.train_dir is required"):
        load_config(write(tmp_path, {"data": {"source": "image_folder"}}))


def test_unknown_recipe_suggests_a_shipped_one() -> None:
    with pytest.raises(ConfigError, match="Did you mean digits_finetune_lite0.yaml"):
        load_config("digits_finetune_lite")


def test_differences_name_what_changed(tmp_path: Path) -> None:
    path = write(tmp_path, DIGITS)
    assert config_differences(load_config(path), load_config(path, ["train.epochs=20"])) == ["train.epochs: 10 -> 20"]


def test_paper_recipe_matches_efficientnet_v1() -> None:
    """Tan & Le 2019, section 5.2: RMSProp decay 0.9 momentum 0.9, BN momentum 0.99, weight decay
    1e-5, lr 0.256 for batch 4096 (0.016 per 256) decayed 0.97 every 2.4 epochs, AutoAugment,
    stochastic depth survival 0.8; tensorflow/tpu: epsilon 1e-3, EMA 0.9999, 5 warm-up epochs."""
    config = load_config("efficientnet_b0_imagenet_paper")
    optim, schedule = config.optim, config.schedule
    assert (optim.name, optim.rmsprop_decay, optim.momentum, optim.eps) == ("rmsprop_tf", 0.9, 0.9, 1e-3)
    assert optim.lr * 4096 / optim.lr_reference_batch == pytest.approx(0.256)
    assert optim.weight_decay == 1e-5
    assert (schedule.name, schedule.decay_rate, schedule.decay_epochs, schedule.warmup_epochs) == ("step", 0.97, 2.4, 5)
    assert config.train.ema_decay == 0.9999
    assert config.augment.auto_augment == "imagenet"
    assert config.model.drop_path_rate == 0.2
    assert config.model.bn_momentum == pytest.approx(1 - 0.99)
    assert config.model.drop_rate is None  # the variant's own dropout (B0 0.2 ... B7 0.5)


def test_v2_progressive_stages_split_the_epochs_evenly() -> None:
    """4 stages over 350 epochs (V2 paper, section 4.3): 87.5 epochs each; stage k of M is
    first + (last - first) * k / (M - 1). The values themselves: tests/tasks/test_recipes.py."""
    config = load_config("efficientnetv2_s_imagenet_progressive")
    assert config.progressive is not None
    assert stage_for_epoch(config, 87, 300).index == 0
    second = stage_for_epoch(config, 88, 300)
    assert second.index == 1
    assert second.image_size == round(128 + (300 - 128) / 3)
    assert second.drop_rate == pytest.approx(0.1 + 0.1 / 3)
    assert second.rand_augment_magnitude == pytest.approx(5 + 5 / 3)


def test_eval_resize_size_gives_exactly_that_resize() -> None:
    """The pipeline resizes the shorter side to floor(size / crop_fraction) (data/transforms.py):
    the fraction from eval_resize_size must land on it for every size, float rounding or not."""
    from effnet.tasks.training.config import DataConfig

    for size in range(8, 700, 7):
        for resize in range(size, size + 80, 3):
            fraction = DataConfig(eval_size=size, eval_resize_size=resize).crop_fraction(size)
            assert math.floor(size / fraction) == resize, (size, resize)
    assert DataConfig(eval_crop_fraction=0.9).crop_fraction(224) == 0.9
    assert DataConfig().crop_fraction(224) is None


def test_a_recipe_that_is_no_text_file_is_one_line(tmp_path: Path) -> None:
    """``effnet train --config photo.jpg``: a UnicodeDecodeError traceback before."""
    from effnet.tasks.training.config import read_yaml

    photo = Path(__file__).resolve().parents[2] / "examples" / "images" / "cat.jpg"
    with pytest.raises(ConfigError, match="cat.jpg: not a text file"):
        read_yaml(photo)
