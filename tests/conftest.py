"""Shared fixtures: real photos shipped inside scikit-image and scikit-learn."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

REFERENCE = Path(__file__).parent / "reference"


def read_reference(name: str) -> list[dict[str, str]]:
    with open(REFERENCE / name) as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    np.random.seed(0)


def real_photos() -> dict[str, np.ndarray]:
    """The four acceptance photos of issue 3 (RGB uint8)."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    return {
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "camera": skimage.data.camera(),
        "china": load_sample_image("china.jpg"),
    }


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    return real_photos()
