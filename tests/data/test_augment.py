"""Training augmentation: shapes and ranges, per-image policies, RandAugment's scales,
TrivialAugmentWide, random erasing, MixUp/CutMix targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from kornia.augmentation.auto import RandAugment, TrivialAugment
from kornia.geometry.transform import resize

from effnet.data.augment import (
    FIXED_POLICY_M,
    KORNIA_RAND_AUGMENT,
    MixAugment,
    TrainAugment,
    image_to_tensor,
    normalize_batch,
    rand_augment_policy,
    resize_batch,
    trivial_augment_wide_policy,
)


def photo_batch() -> torch.Tensor:
    import skimage.data

    image = image_to_tensor(skimage.data.chelsea())  # 300x451 RGB, a real photo
    return torch.stack([image, image.flip(-1)])


def test_random_crop_gives_unit_range_at_size() -> None:
    out = TrainAugment(64)(photo_batch())
    assert out.shape == (2, 3, 64, 64)
    assert out.dtype == torch.float32 and 0.0 <= out.min() and out.max() <= 1.0


def test_plain_resize_and_certain_flip_are_exact() -> None:
    images = photo_batch()[:, :, 100:164, 200:280]  # small enough to skip the antialiased pre-shrink
    augment = TrainAugment(48, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=1.0, interpolation="bilinear")
    expected = resize(images.float() / 255, (48, 48), interpolation="bilinear", align_corners=False).flip(-1)
    torch.testing.assert_close(augment(images), expected.clamp(0, 1))


def test_grey_single_image_keeps_its_channel() -> None:
    digit = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    out = TrainAugment(32, crop_scale=(0.7, 1.0), hflip=0.0)(digit)
    assert out.shape == (1, 32, 32)


@pytest.mark.parametrize("policy", [{"auto_augment": "imagenet"}, {"rand_augment_magnitude": 15}])
def test_policies_pick_operations_per_image(policy: dict) -> None:
    """kornia draws a policy's operations once per call; run per image, copies differ."""
    torch.manual_seed(0)
    image = photo_batch()[:1].repeat(8, 1, 1, 1)
    augment = TrainAugment(64, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, **policy)
    out = augment(image)
    distinct = {tuple(x.flatten()[::97].tolist()) for x in out}
    assert len(distinct) >= 4


def test_large_images_are_shrunk_with_antialiasing_before_cropping() -> None:
    """A fine checkerboard must average to grey, not alias into stripes."""
    board = ((torch.arange(512)[:, None] + torch.arange(512)[None, :]) % 2 * 255).to(torch.uint8)
    out = TrainAugment(32, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0)(board[None])
    assert (out - 0.5).abs().max() < 0.05


def test_normalize_matches_the_formula() -> None:
    x = torch.rand(2, 3, 4, 4)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    torch.testing.assert_close(normalize_batch(x, mean, std), expected)
    grey = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(normalize_batch(grey, (0.5,), (0.25,)), (grey - 0.5) / 0.25)


def test_resize_batch_upscales_digits() -> None:
    digits = torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8)
    out = resize_batch(digits, 32)
    assert out.shape == (3, 1, 32, 32) and out.max() <= 1.0


def test_mixup_targets_weigh_the_images_as_mixed() -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 8, 8)
    labels = torch.arange(6)
    mixed, targets = MixAugment(10, mixup_alpha=0.4)(images, labels)
    torch.testing.assert_close(targets.sum(1), torch.ones(6))
    for i in range(6):
        weights = targets[i]
        partner = int(weights.clone().index_fill_(0, torch.tensor([i]), 0).argmax()) if weights[i] < 1 else i
        keep = float(weights[i]) if partner != i else 1.0
        torch.testing.assert_close(mixed[i], keep * images[i] + (1 - keep) * images[partner])


def test_cutmix_targets_equal_the_pixel_shares() -> None:
    torch.manual_seed(1)
    images = torch.arange(6, dtype=torch.float32)[:, None, None, None].expand(6, 1, 16, 16).clone()
    mixed, targets = MixAugment(6, cutmix_alpha=1.0)(images, torch.arange(6))
    for i in range(6):
        own_share = float((mixed[i] == i).float().mean())
        assert targets[i, i] == pytest.approx(own_share, abs=1e-6)


def test_no_mixing_returns_hard_labels() -> None:
    images, labels = torch.rand(2, 3, 4, 4), torch.tensor([1, 2])
    out, targets = MixAugment(5)(images, labels)
    assert out is images and targets is labels


def test_image_to_tensor_layout() -> None:
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    assert torch.equal(image_to_tensor(rgb)[:, 1, 2], torch.from_numpy(rgb[1, 2]))
    assert image_to_tensor(rgb[:, :, 0]).shape == (1, 2, 3)


# -- RandAugment on TensorFlow's levels ----------------------------------------------------------------
def small_photo() -> torch.Tensor:
    return resize(photo_batch()[:1].float() / 255, (48, 48))


@pytest.mark.parametrize("level", [1.0, 2.5, 5.0, 9.0])
def test_tf_level_is_kornias_magnitude_times_three(level: float) -> None:
    """kornia 0.9's RandAugment sets an operation to low + (high - low) * m / 30 (its forward_parameters);
    TF's to level / 10 of the range. Each operation at level L equals kornia's own at m = 3 L."""
    image = small_photo()
    ours = rand_augment_policy(level)
    for index, operation in enumerate(KORNIA_RAND_AUGMENT):
        for seed in range(3):
            torch.manual_seed(seed)
            expected = RandAugment(1, 3 * level, policy=[operation])(image)
            torch.manual_seed(seed)
            got = RandAugment(1, FIXED_POLICY_M, policy=[ours[index]])(image)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-4, msg=str(operation))


def test_tf_level_10_is_every_range_at_its_top_and_past_it_grows_as_tf() -> None:
    """Level 10 (V2-S) is kornia's m = 30, which kornia's RandAugment refuses; past 10 (V2-M 15,
    V2-L 20) TF's code keeps growing linearly and kornia's bounded ranges stop at their bound."""
    with pytest.raises(ValueError):
        RandAugment(2, 30)
    top = {name: (low, high) for [(name, low, high)] in KORNIA_RAND_AUGMENT}
    at_10 = {name: (low, high) for [(name, low, high)] in rand_augment_policy(10)}
    for name, (low, high) in top.items():
        if low == -high:
            assert at_10[name][1] * FIXED_POLICY_M / 30 == pytest.approx(high)  # (0, max) scaled by m / 30
        elif name == "posterize":
            assert at_10[name] == (low, low)  # kornia's posterize runs backwards: 4 bits at the top
        elif name not in ("auto_contrast", "equalize", "invert"):
            assert at_10[name] == pytest.approx((high, high))
    at_20 = {name: (low, high) for [(name, low, high)] in rand_augment_policy(20)}
    assert at_20["rotate"][1] * FIXED_POLICY_M / 30 == pytest.approx(60.0)  # TF: 30 degrees per 10 levels
    assert at_20["color"] == pytest.approx((3.7, 3.7))  # TF: 0.1 + 1.8 * level / 10
    assert (at_20["brightness"], at_20["solarize"], at_20["solarize_add"], at_20["posterize"]) == (
        (2.0, 2.0), (1.0, 1.0), (0.5, 0.5), (0.0, 0.0))


def test_train_augment_reads_the_magnitude_on_its_scale() -> None:
    kornia_scale = TrainAugment(32, rand_augment_magnitude=15)
    tf_scale = TrainAugment(32, rand_augment_magnitude=10, rand_augment_scale="tf")
    assert kornia_scale.policy.m == 15
    assert tf_scale.policy.m == FIXED_POLICY_M
    image = photo_batch()[:1]
    for seed in range(4):
        torch.manual_seed(seed)
        out = tf_scale(image)
        assert out.shape == (1, 3, 32, 32) and 0.0 <= out.min() and out.max() <= 1.0


# -- TrivialAugmentWide and random erasing ----------------------------------------------------------------
def test_trivial_augment_wide_uses_torchvisions_strengths() -> None:
    """torchvision's TrivialAugmentWide: shear factor up to 0.99, translate up to 32 px, rotate up
    to 135 degrees, enhancement factors 1 +- 0.99, posterize down to 2 bits, identity among them."""
    policy = {name: (low, high) for [(name, low, high)] in trivial_augment_wide_policy(224)}
    assert math.tan(math.radians(policy["shear_x"][1] * 180)) == pytest.approx(0.99)  # kornia: angle / 180
    assert policy["translate_y"][1] * 224 == pytest.approx(32)
    assert policy["rotate"] == (-135.0, 135.0) and policy["posterize"] == (2.0, 8.0)
    assert policy["contrast"] == (0.01, 1.99)
    assert len(trivial_augment_wide_policy(224)) == 14
    image = small_photo()
    identity = TrivialAugment([trivial_augment_wide_policy(48)[0]])
    torch.testing.assert_close(identity(image), image)


def test_trivial_augment_wide_picks_an_operation_per_image() -> None:
    torch.manual_seed(0)
    image = photo_batch()[:1].repeat(8, 1, 1, 1)
    out = TrainAugment(64, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, auto_augment="ta_wide")(image)
    assert len({tuple(x.flatten()[::97].tolist()) for x in out}) >= 4


def test_random_erasing_fills_a_box_with_the_mean() -> None:
    """torchvision erases after Normalize with 0: the box is the mean colour, 0 once normalized."""
    torch.manual_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    image = photo_batch()[:, :, 100:164, 200:264]
    plain = TrainAugment(64, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0)
    erasing = TrainAugment(64, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=0.0, random_erase=1.0,
                           erase_fill=mean)
    before, after = normalize_batch(plain(image), mean, std), normalize_batch(erasing(image), mean, std)
    changed = (before != after).any(dim=1)
    for i in range(len(image)):
        rows, cols = changed[i].nonzero(as_tuple=True)
        assert len(rows) > 0
        box = after[i, :, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        torch.testing.assert_close(box, torch.zeros_like(box), atol=1e-6, rtol=0)
        outside = torch.ones_like(changed[i])
        outside[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = False
        assert torch.equal(before[i][:, outside], after[i][:, outside])
    assert TrainAugment(64).erase is None
