"""Training and validation data: sources, samplers that resume mid-epoch, corrupt-image counting.

Determinism is what makes ``--resume`` exact and multi-process runs comparable:

- the order of an epoch is ``DistributedSampler``'s seeded permutation (seed + epoch), the
  same for any number of processes, and a resumed epoch skips the samples already seen
  (with repeated augmentation too: torchvision's ``RASampler`` order from the same seed);
- per-image augmentation (image folders) runs under a generator seeded by
  (seed, epoch, index), so an image gets the same crop whatever worker, process or resume
  point handles it;
- batch-level augmentation (in-memory data) draws from the main process's generator,
  whose state the checkpoint holds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ...data.augment import TrainAugment, image_to_tensor
from ...data.datasets import (
    DatasetError,
    Failed,
    ImageDataset,
    LabelResolver,
    read_class_map,
    reduced_decode_side,
    scan_image_folder,
)
from ...data.digits import CLASS_NAMES as DIGIT_NAMES
from ...data.digits import load_digits_split
from ...data.transforms import Preprocessing
from .config import Config


class InMemoryImages(Dataset):
    """Same-size uint8 images held as one tensor (N, C, H, W); augmented per batch later."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A distinct 63-bit seed per (run seed, epoch, sample) (SplitMix64-style mixing)."""
    value = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % (1 << 64)
    value ^= value >> 31
    return value % (1 << 63)


class SeededSamples(Dataset):
    """Runs each sample's loading and augmentation under its own seeded torch generator."""

    def __init__(self, dataset: ImageDataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, self.epoch, index))
            return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` whose epoch can start after the first ``start`` samples.

    ``repeats`` > 1 is repeated augmentation as torchvision's ``RASampler`` (from DeiT) does
    it: the epoch's permutation with every index ``repeats`` times in a row, dealt round-robin
    to the processes (so the copies of an image land on different processes, each augmenting
    its own), and cut to ``len(dataset) // 256 * 256 / processes`` samples each, so an epoch
    stays about one pass of images (each seen ``repeats`` times, on ``1 / repeats`` of them).
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True,
                 repeats: int = 1) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0
        self.repeats = repeats
        if repeats > 1:
            self.total_size = math.ceil(len(dataset) * repeats / num_replicas) * num_replicas
            self.num_samples = len(dataset) // 256 * 256 // num_replicas

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        super().set_epoch(epoch)
        self.start = start

    def _repeated(self) -> list[int]:
        count = len(self.dataset)  # type: ignore[arg-type]
        if self.shuffle:
            order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(count))
        indices = [index for index in order for _ in range(self.repeats)]
        indices += indices[: self.total_size - len(indices)]
        return indices[self.rank : self.total_size : self.num_replicas][: self.num_samples]

    def __iter__(self) -> Iterator[int]:
        epoch = self._repeated() if self.repeats > 1 else super().__iter__()
        return itertools.islice(iter(epoch), self.start, None)

    def __len__(self) -> int:
        return self.num_samples - self.start


def collate_skipping_failed(batch: Sequence[tuple[Any, int]]) -> tuple[torch.Tensor | None, torch.Tensor, list[Failed]]:
    """Stack the usable samples; return the failed ones beside them so they can be counted."""
    good = [(image, label) for image, label in batch if not isinstance(image, Failed)]
    failed = [image for image, _ in batch if isinstance(image, Failed)]
    if not good:
        return None, torch.empty(0, dtype=torch.int64), failed
    images = torch.stack([torch.as_tensor(image) for image, _ in good])
    return images, torch.tensor([label for _, label in good], dtype=torch.int64), failed


class CropToTensor:
    """Evaluation crop (numpy/Pillow, as at inference) -> CxHxW uint8 tensor; picklable for workers."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        self.preprocessing = preprocessing

    def __call__(self, image: np.ndarray, source_size: tuple[int, int] | None = None) -> torch.Tensor:
        return image_to_tensor(self.preprocessing.resize_crop(image, source_size))


class AugmentImage:
    """Decoded HxWx3 uint8 -> augmented CxSxS float tensor (runs in data workers)."""

    def __init__(self, augment: TrainAugment) -> None:
        self.augment = augment

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return self.augment(image_to_tensor(image))


@dataclass
class TrainData:
    """What the engine needs: datasets, class names, and where augmentation runs."""

    train: Dataset
    val: Dataset | None
    class_names: tuple[str, ...]
    in_memory: bool

    def set_train_augment(self, augment: TrainAugment) -> None:
        """Install a (new) augmentation; image folders get it inside their workers."""
        if isinstance(self.train, SeededSamples):
            self.train.dataset.transform = AugmentImage(augment)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.train, SeededSamples):
            self.train.epoch = epoch


def build_data(config: Config, eval_preprocessing: Preprocessing) -> TrainData:
    """The configured source as datasets; evaluation crops use ``eval_preprocessing``."""
    data = config.data
    if data.source == "digits":
        train, val = load_digits_split(data.val_fraction, data.split_seed)
        repeat = config.model.in_chans

        def as_tensor(images: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(images)[:, None].repeat(1, repeat, 1, 1).contiguous()

        return TrainData(
            InMemoryImages(as_tensor(train.images), torch.from_numpy(train.labels)),
            InMemoryImages(as_tensor(val.images), torch.from_numpy(val.labels)),
            DIGIT_NAMES, in_memory=True,
        )
    train_dir = Path(data.train_dir or "")
    if data.class_map:
        mapping = read_class_map(data.class_map)
        resolver = LabelResolver(num_classes=config.model.num_classes, class_map=mapping)
        names = tuple(sorted(mapping, key=mapping.__getitem__))
    else:
        if not train_dir.is_dir():
            raise DatasetError(f"{train_dir}: training folder not found (data.train_dir)")
        names = tuple(sorted(p.name for p in train_dir.iterdir() if p.is_dir()))
        if len(names) != config.model.num_classes:
            raise DatasetError(
                f"{train_dir} has {len(names)} class folders but model.num_classes is {config.model.num_classes}"
            )
        resolver = LabelResolver(num_classes=config.model.num_classes, class_names=names)
    train_set = SeededSamples(ImageDataset(scan_image_folder(train_dir, resolver), image_to_tensor), config.train.seed)
    val_set = None
    if data.val_dir:
        val_set = ImageDataset(scan_image_folder(data.val_dir, resolver), CropToTensor(eval_preprocessing),
                               reduce_to=reduced_decode_side(eval_preprocessing))
    return TrainData(train_set, val_set, names, in_memory=False)


def make_loader(dataset: Dataset, sampler: Any, batch_size: int, workers: int, drop_last: bool,
                seed: int) -> DataLoader:
    """A loader whose worker seeds come from its own generator, never the global one."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, drop_last=drop_last,
        collate_fn=collate_skipping_failed, generator=generator, persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


class ShardSampler(torch.utils.data.Sampler[int]):
    """Every ``world``-th sample from ``rank``, in order and without padding (exact evaluation)."""

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.indices = range(rank, length, world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
