"""The digits source: scikit-learn's 1,797 real 8x8 digits, split the same way every time."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from effnet.data.digits import CLASS_NAMES, load_digits_split


def test_split_is_stratified_complete_and_reproducible() -> None:
    train, val = load_digits_split(0.2, seed=0)
    assert (len(train), len(val)) == (1437, 360)  # 1,797 images (sklearn's load_digits docs)
    counts = np.bincount(val.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # each digit ~1/10 of the held-out set
    again_train, again_val = load_digits_split(0.2, seed=0)
    assert np.array_equal(val.images, again_val.images) and np.array_equal(train.labels, again_train.labels)
    _, other = load_digits_split(0.2, seed=1)
    assert not np.array_equal(val.images, other.images)
    assert CLASS_NAMES == tuple("0123456789")


def test_pixels_are_the_source_scaled_to_8_bits() -> None:
    source = load_digits()
    train, val = load_digits_split()
    images = np.concatenate([train.images, val.images])
    assert images.dtype == np.uint8 and images.shape[1:] == (8, 8)
    assert images.max() == 255 and images.min() == 0
    expected = sorted(np.rint(source.images * 255 / 16).astype(np.uint8).reshape(len(source.images), -1).tolist())
    assert sorted(images.reshape(len(images), -1).tolist()) == expected
