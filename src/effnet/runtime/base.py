"""What every inference engine provides, whatever runs the network underneath."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.transforms import Preprocessing
from ..errors import UsageError


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


@dataclass
class FileEngine(Engine):
    """An engine over an exported file (ONNX, OpenVINO IR, TFLite) that carries effnet's
    metadata: the file names its weights, and it runs on the CPU."""

    path: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def weights_name(self) -> str:
        return str(self.metadata.get("weights") or self.path)

    @staticmethod
    def check_options(name: str, weights: Any, suffixes: tuple[str, ...], made_by: str, device: str,
                      threads: int | None) -> None:
        """The checks every file engine makes before opening anything, one line each: a file of
        the kind it runs (``made_by`` says how to get one), the CPU, at least one thread."""
        if weights in (None, "default") or not str(weights).lower().endswith(suffixes):
            raise UsageError(f"the {name} engine needs an exported model: {made_by}")
        if device.split(":")[0] != "cpu":
            raise UsageError(f"--device {device}: the {name} engine runs on the CPU only (--engine torch runs on "
                             "a GPU)")
        if threads is not None and threads < 1:
            raise UsageError("--threads must be at least 1")

    @staticmethod
    def check_arch(path: Any, model: str | None, arch: str) -> None:
        """``model``, when given, must name the architecture the file holds."""
        if model is None:
            return
        from ..models.variants import canonical_name  # pure Python: no torch

        if canonical_name(model) != arch:
            raise UsageError(f"{path} holds {arch}, not {model}")

    @staticmethod
    def refuse_overrides(path: Any, preprocessing: Any, kind: str) -> None:
        """A file whose preprocessing is fixed inside it (``kind``: "a TFLite file") takes no
        ``--size``/``--crop-pct``/... override: one line, before the file is opened."""
        if any(value is not None for value in (preprocessing or {}).values()):
            raise UsageError(f"{path}: {kind} is exported at a fixed size with its preprocessing inside; --size, "
                             "--crop-pct, --interpolation, --mean and --std cannot change it")


def run_in_fixed_batches(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: int | None) -> np.ndarray:
    """``run`` over ``batch`` in runs of exactly ``size`` rows, for files compiled for one batch
    size (a TFLite file's 1, an NPU-style ONNX file's N): the last run is padded by repeating
    its last row and the padding's outputs are dropped. ``size`` None: one run of any size."""
    if size is None or len(batch) == size:
        return run(batch)
    outputs = []
    for start in range(0, len(batch), size):
        chunk = batch[start:start + size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], size - len(chunk), axis=0)])
        outputs.append(run(padded)[:len(chunk)])
    return np.concatenate(outputs)
