"""What every inference engine provides, whatever runs the network underneath."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.transforms import Preprocessing


@dataclass
class Engine:
    """A callable from a preprocessed batch to logits, plus what its weights expect.

    ``name`` is the registry name (``torch``, ``onnxruntime``, ...); ``preprocessing`` and
    ``labels`` come from the weights or the file the engine runs, so callers never consult
    the registry themselves.
    """

    name: str
    arch: str
    preprocessing: Preprocessing
    labels: tuple[str, ...]

    def __call__(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def device_type(self) -> str:
        """Where the network runs (``cpu``, ``cuda``): a data loader pins its batches for a GPU."""
        return "cpu"

    @property
    def takes_images(self) -> bool:
        """True for graphs that preprocess decoded uint8 images themselves (any size)."""
        return False

    @property
    def weights_name(self) -> str:
        """The weights entry (or file) behind this engine, for reports."""
        return self.arch

    def example_input(self, batch_size: int = 1) -> np.ndarray:
        """A zero batch this engine accepts (for warm-up): float32 NCHW at the preprocessing
        size, or uint8 NHWC images for an engine that takes images."""
        size = self.preprocessing.size
        if self.takes_images:
            return np.zeros((batch_size, size, size, 3), np.uint8)
        return np.zeros((batch_size, 3, size, size), np.float32)

    def collate(self, arrays: Sequence[np.ndarray]) -> np.ndarray | list[np.ndarray]:
        """One batch from preprocessed arrays: stacked, or, for an engine that takes raw images
        of different sizes, the list as it is (the engine groups them itself)."""
        if self.takes_images and len({array.shape for array in arrays}) > 1:
            return list(arrays)
        return np.stack(arrays)
