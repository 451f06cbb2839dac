"""Training augmentation on torch tensors, built from kornia: crops, flips, AutoAugment,
RandAugment, TrivialAugmentWide, random erasing, MixUp and CutMix.

Kept apart from the numpy inference preprocessing (``transforms.py``) so that inference
never imports torch. Work splits in two places because kornia's policies draw their
operations once per call:

- ``TrainAugment`` crops, flips and applies a policy. It runs on one image at a time where
  images differ in size or a policy is on (each image then gets its own operations, as in
  the papers), and on a whole batch where images share a size and no policy is on (the crops
  and flips are still drawn per image, and kornia's per-call cost is paid once).
- ``MixAugment`` mixes images of a batch and turns the labels into soft targets that
  ``CrossEntropyLoss`` accepts.

RandAugment magnitudes come on two scales. kornia's ``RandAugment(n, m)`` sets every
operation to ``low + (high - low) * m / 30`` of its range (``m`` strictly between 0 and 30);
TensorFlow's (the EfficientNet papers', timm's ``m9``) sets it to ``level / 10`` of the same
range, so level L is kornia's ``m = 3 L``. Level 10, each operation's full range, is kornia's
30, which kornia refuses, and the V2 recipes go past it (15, 20), as TF's code allows: for
levels ``rand_augment_policy`` fixes every operation at the level's value instead (kornia's
policy with each range narrowed to that point), growing linearly past 10 and held at the
bounds kornia accepts (brightness 2, solarize threshold 1, solarize addition 0.5, posterize
0 bits).
"""

from __future__ import annotations

import math
from typing import Literal

import kornia.augmentation as K
import numpy as np
import torch
from kornia.augmentation.auto import AutoAugment, RandAugment, TrivialAugment
from kornia.augmentation.auto.rand_augment.rand_augment import default_policy as KORNIA_RAND_AUGMENT
from kornia.enhance import normalize
from kornia.geometry.transform import resize

Interpolation = Literal["bilinear", "bicubic", "nearest"]
Pair = tuple[float, float]
Policy = list[list[tuple[str, float, float]]]

#: The strongest value kornia's operations accept where its RandAugment ranges could grow past it.
KORNIA_BOUNDS = {"brightness": (0.0, 2.0), "solarize": (0.0, 1.0), "solarize_add": (-0.5, 0.5),
                 "posterize": (0.0, 8.0)}
#: Any m kornia accepts: ``rand_augment_policy`` narrows each range to one point, except the
#: symmetric ones, whose ``(0, max)`` kornia scales by m / 30 = 1/2.
FIXED_POLICY_M = 15


def rand_augment_policy(level: float) -> Policy:
    """kornia's RandAugment operations, each at TensorFlow's ``level`` (10: its full range).

    An operation with range (low, high) gets ``low + (high - low) * level / 10`` (posterize,
    whose kornia range runs backwards, ``high - (high - low) * level / 10`` bits), clamped to
    ``KORNIA_BOUNDS``; symmetric ones (rotate, shear, translate) keep their random sign. Run
    with ``RandAugment(n, FIXED_POLICY_M, policy)``; below level 10 it draws exactly what
    kornia's own ``RandAugment(n, 3 * level)`` draws.
    """
    policy: Policy = []
    for [(name, low, high)] in KORNIA_RAND_AUGMENT:
        if low == -high:
            value = high * level / 10 * 30 / FIXED_POLICY_M
            policy.append([(name, -value, value)])
            continue
        value = high - (high - low) * level / 10 if name == "posterize" else low + (high - low) * level / 10
        lowest, highest = KORNIA_BOUNDS.get(name, (-math.inf, math.inf))
        value = min(max(value, lowest), highest)
        policy.append([(name, value, value)])
    return policy


def trivial_augment_wide_policy(size: int) -> Policy:
    """torchvision's ``TrivialAugmentWide`` operations and strengths, in kornia's units.

    One operation per image at a uniformly drawn strength: identity; rotate up to 135 degrees;
    shear up to a factor 0.99 (kornia takes the angle as a fraction of 180 degrees); translate
    up to 32 pixels (kornia: a fraction of the ``size`` crop, at most all of it); colour, contrast, brightness and
    sharpness factors 0.01-1.99; posterize 2-8 bits; solarize at any threshold; autocontrast;
    equalize. kornia draws strengths from the continuous range where torchvision picks one
    of 31 steps, and its brightness adds ``factor - 1`` where torchvision scales.
    """
    shear = math.degrees(math.atan(0.99)) / 180
    shift = min(32 / size, 1.0)
    return [
        [("brightness", 1.0, 1.0)],  # identity: a brightness factor of 1 changes nothing
        [("auto_contrast", 0.0, 1.0)],
        [("equalize", 0.0, 1.0)],
        [("rotate", -135.0, 135.0)],
        [("posterize", 2.0, 8.0)],
        [("solarize", 0.0, 1.0)],
        [("color", 0.01, 1.99)],
        [("contrast", 0.01, 1.99)],
        [("brightness", 0.01, 1.99)],
        [("sharpness", 0.01, 1.99)],
        [("shear_x", -shear, shear)],
        [("shear_y", -shear, shear)],
        [("translate_x", -shift, shift)],
        [("translate_y", -shift, shift)],
    ]


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxW or HxWxC uint8 array -> CxHxW uint8 tensor (no copy of the pixels' meaning)."""
    array = image[:, :, None] if image.ndim == 2 else image
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def to_unit_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 0-255 -> float 0-1; float input is taken as already scaled."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


class TrainAugment:
    """Random resized crop to ``size``, horizontal flip, a policy (AutoAugment, TrivialAugmentWide
    or RandAugment), then random erasing.

    ``crop_scale=(1, 1)`` with ``crop_ratio=(1, 1)`` means a plain resize (no random crop),
    for data whose framing must not change. ``rand_augment_scale``: ``kornia`` takes
    ``rand_augment_magnitude`` as kornia's m (0-30), ``tf`` as TensorFlow's level (see the
    module docstring). ``random_erase`` is the probability of erasing one box per image
    (torchvision's ``RandomErasing`` sizes: 2-33% of the area, aspect 0.3-3.3); the box holds
    ``erase_fill``, the normalization mean, so it is 0 after normalization, as torchvision
    erases after ``Normalize``. Images larger than twice ``size`` are first shrunk with
    antialiasing, since kornia's crop resizes without it.
    """

    def __init__(
        self,
        size: int,
        crop_scale: Pair = (0.08, 1.0),
        crop_ratio: Pair = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        auto_augment: str | None = None,
        rand_augment_ops: int = 2,
        rand_augment_magnitude: float | None = None,
        interpolation: Interpolation = "bicubic",
        *,
        rand_augment_scale: Literal["kornia", "tf"] = "kornia",
        random_erase: float = 0.0,
        erase_fill: tuple[float, ...] = (0.0,),
    ) -> None:
        self.size = size
        align = None if interpolation == "nearest" else False
        if tuple(crop_scale) == (1.0, 1.0) and tuple(crop_ratio) == (1.0, 1.0):
            crop: K.AugmentationBase2D = K.Resize((size, size), resample=interpolation, align_corners=align)
        else:
            crop = K.RandomResizedCrop(
                (size, size), scale=crop_scale, ratio=crop_ratio, resample=interpolation,
                align_corners=bool(align),
            )
        steps: list[K.AugmentationBase2D] = [crop]
        if hflip > 0:
            steps.append(K.RandomHorizontalFlip(p=hflip))
        self.geometric = K.AugmentationSequential(*steps)
        self.policy: torch.nn.Module | None = None
        if auto_augment == "ta_wide":
            self.policy = TrivialAugment(trivial_augment_wide_policy(size))
        elif auto_augment:
            self.policy = AutoAugment(auto_augment)
        elif rand_augment_magnitude and rand_augment_scale == "tf":
            self.policy = RandAugment(rand_augment_ops, FIXED_POLICY_M, rand_augment_policy(rand_augment_magnitude))
        elif rand_augment_magnitude:
            self.policy = RandAugment(n=rand_augment_ops, m=rand_augment_magnitude)
        self.erase = K.RandomErasing(p=random_erase) if random_erase > 0 else None
        self.erase_fill = torch.tensor(erase_fill)[:, None, None]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(C, H, W) or (B, C, H, W), uint8 or 0-1 float -> float 0-1 at ``size`` x ``size``."""
        single = images.ndim == 3
        batch = to_unit_float(images[None] if single else images)
        if min(batch.shape[-2:]) > 2 * self.size:
            batch = resize(batch, 2 * self.size, side="short", antialias=True)
        out = self.geometric(batch)
        if self.policy is not None:
            out = torch.cat([self.policy(image[None]) for image in out])
        out = out.clamp_(0.0, 1.0)
        if self.erase is not None:
            fill = self.erase_fill.to(out)
            out = self.erase(out - fill) + fill  # kornia fills with 0: erase around the mean
        return out[0] if single else out


def resize_batch(images: torch.Tensor, size: int, interpolation: Interpolation = "bicubic") -> torch.Tensor:
    """Same-size images to ``size`` x ``size`` float 0-1 (evaluation of in-memory data)."""
    batch = to_unit_float(images)
    if batch.shape[-2:] == (size, size):
        return batch
    return resize(batch, (size, size), interpolation=interpolation, antialias=True).clamp_(0.0, 1.0)


def normalize_batch(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """(x - mean) / std per channel on a 0-1 float batch."""
    channels = images.shape[1]
    mean_t = torch.tensor(mean if len(mean) == channels else mean * channels, dtype=images.dtype)
    std_t = torch.tensor(std if len(std) == channels else std * channels, dtype=images.dtype)
    return normalize(images, mean_t.to(images.device), std_t.to(images.device))


class MixAugment:
    """MixUp (lambda ~ Beta(alpha, alpha) per batch) or CutMix (kornia) with soft targets.

    With both enabled each batch uses one of them, chosen with equal odds (timm's and the
    papers' practice). Targets are ``lam * onehot(y) + (1 - lam) * onehot(y_partner)``
    where ``lam`` is the share of the original image left in the mix.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0) -> None:
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.cutmix = (
            K.RandomCutMixV2(num_mix=1, beta=cutmix_alpha, use_correct_lambda=True, data_keys=["input", "class"])
            if cutmix_alpha > 0 else None
        )

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def _soft(self, table: torch.Tensor) -> torch.Tensor:
        """kornia's (B, 3) rows ``(label, partner, lam)`` -> (B, num_classes) probabilities."""
        first = torch.nn.functional.one_hot(table[:, 0].long(), self.num_classes).float()
        second = torch.nn.functional.one_hot(table[:, 1].long(), self.num_classes).float()
        keep = table[:, 2:3].float()
        return keep * first + (1.0 - keep) * second

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.active:
            return images, labels
        use_cutmix = self.cutmix is not None and (self.mixup_alpha <= 0 or bool(torch.rand(()) < 0.5))
        if use_cutmix:
            mixed, table = self.cutmix(images, labels)
            return mixed, self._soft(table[0])
        lam = float(torch.distributions.Beta(self.mixup_alpha, self.mixup_alpha).sample())
        mixup = K.RandomMixUpV2(lambda_val=torch.tensor([lam, lam]), data_keys=["input", "class"])
        mixed, table = mixup(images, labels)
        # kornia's lambda weighs the partner; the share of the original is 1 - lambda
        table = torch.stack([table[:, 0], table[:, 1], 1.0 - table[:, 2]], dim=1)
        return mixed, self._soft(table)
