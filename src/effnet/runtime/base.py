"""What every inference backend provides."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.transforms import Preprocessing


@dataclass
class Backend:
    """A callable from a preprocessed NCHW float32 batch to logits, plus what it expects."""

    name: str
    arch: str
    preprocessing: Preprocessing
    labels: tuple[str, ...]

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.labels)
