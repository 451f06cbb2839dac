"""Training augmentation: shapes and ranges, per-image policies, MixUp/CutMix targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kornia.geometry.transform import resize

from effnet.data.augment import MixAugment, TrainAugment, image_to_tensor, normalize_batch, resize_batch


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
