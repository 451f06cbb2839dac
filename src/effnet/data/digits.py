"""scikit-learn's handwritten digits: a real labelled image set that ships offline.

1,797 grey 8x8 images of the digits 0-9 (UCI optdigits test set, 4-bit pixel values),
small enough to train on two CPU cores in minutes, which makes it the honest end-to-end
check of the training loop on a machine without ImageNet. Images stay in memory as uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = tuple(str(digit) for digit in range(10))


@dataclass(frozen=True)
class DigitsSplit:
    """One side of the split: ``images`` (N, 8, 8) uint8 in 0-255 and ``labels`` (N,) int64."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def load_digits_split(val_fraction: float = 0.2, seed: int = 0) -> tuple[DigitsSplit, DigitsSplit]:
    """A stratified train/validation split, the same for the same ``seed`` on every machine.

    Pixels are 0-16 in the source; they are scaled to 0-255 so the usual image
    normalisation (and pretrained stems) see the contrast they were trained on.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    train_x, val_x, train_y, val_y = train_test_split(
        images, labels, test_size=val_fraction, random_state=seed, stratify=labels
    )
    return DigitsSplit(train_x, train_y), DigitsSplit(val_x, val_y)
