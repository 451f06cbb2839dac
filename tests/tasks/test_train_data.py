"""The training sampler: resumable epochs, and repeated augmentation as torchvision samples it."""

from __future__ import annotations

import math

import pytest
import torch

from effnet.tasks.training.data import ResumableSampler


def torchvision_ra_sampler(size: int, replicas: int, rank: int, seed: int, epoch: int, repetitions: int) -> list[int]:
    """references/classification/sampler.py's RASampler.__iter__, written out."""
    num_samples = int(math.ceil(size * float(repetitions) / replicas))
    total_size = num_samples * replicas
    num_selected_samples = int(math.floor(size // 256 * 256 / replicas))
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    indices = torch.randperm(size, generator=g).tolist()
    indices = [ele for ele in indices for _ in range(repetitions)]
    indices += indices[: (total_size - len(indices))]
    indices = indices[rank:total_size:replicas]
    return indices[:num_selected_samples]


@pytest.mark.parametrize(("size", "replicas", "repeats"), [(1437, 1, 4), (1000, 4, 4), (777, 3, 3), (600, 2, 2)])
def test_repeated_augmentation_deals_torchvisions_indices(size: int, replicas: int, repeats: int) -> None:
    dataset = range(size)
    for epoch in (0, 3):
        for rank in range(replicas):
            sampler = ResumableSampler(dataset, replicas, rank, seed=5, repeats=repeats)  # type: ignore[arg-type]
            sampler.set_epoch(epoch)
            expected = torchvision_ra_sampler(size, replicas, rank, 5, epoch, repeats)
            assert list(sampler) == expected and len(sampler) == sampler.num_samples == len(expected)


def test_the_copies_of_an_image_go_to_different_processes() -> None:
    """4 processes, 4 repeats: the k-th sample of every rank is the same image, augmented 4 ways."""
    ranks = []
    for rank in range(4):
        sampler = ResumableSampler(range(1024), 4, rank, seed=0, repeats=4)  # type: ignore[arg-type]
        sampler.set_epoch(1)
        ranks.append(list(sampler))
    assert all(len(set(column)) == 1 for column in zip(*ranks))
    assert len(set(ranks[0])) == 256  # an epoch shows a quarter of the images, each 4 times


def test_a_resumed_epoch_skips_what_was_seen() -> None:
    for repeats in (1, 4):
        sampler = ResumableSampler(range(700), 2, 1, seed=3, repeats=repeats)  # type: ignore[arg-type]
        sampler.set_epoch(2)
        whole = list(sampler)
        sampler.set_epoch(2, start=100)
        assert list(sampler) == whole[100:] and len(sampler) == len(whole) - 100
