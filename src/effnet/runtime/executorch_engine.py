"""The ExecuTorch engine: a ``.pte`` program from ``effnet export --format executorch`` (the
XNNPACK delegate, PyTorch's own path to phones) in ExecuTorch's runtime.

The program carries effnet's metadata (architecture, weights, preprocessing, labels) as a
constant method, ``effnet_metadata``, returning it as JSON; ExecuTorch keeps it beside
``forward`` in the file and other tools ignore it. effnet's programs take one normalized
float32 NCHW image at the weights' own size, so a batch runs image by image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._quiet import quiet
from ..data.labels import resolve_labels
from ..data.transforms import Preprocessing
from ..errors import EffnetError
from .base import FileEngine, run_in_fixed_batches

#: The constant method holding effnet's metadata (JSON) in a ``.pte`` program.
METADATA_METHOD = "effnet_metadata"
#: The only input an effnet program takes.
INPUT_FLOAT_NCHW = "float32_nchw"


class PteModelError(EffnetError, ValueError):
    """A ``.pte`` file ExecuTorch cannot load, or one effnet did not write."""


def load_program(path: str) -> tuple[Any, dict[str, Any]]:
    """The ExecuTorch program in ``path`` and its effnet metadata (``{}`` when it has none)."""
    try:
        with quiet():  # importing it loads torchao, which reports its optional kernels; the C++ logs CPU probes
            from executorch.runtime import Runtime

            program = Runtime.get().load_program(str(path))
            metadata = {}
            if METADATA_METHOD in program.method_names:
                metadata = json.loads(str(program.load_method(METADATA_METHOD).execute([])[0]))
    except (RuntimeError, ValueError) as exc:
        raise PteModelError(f"{path}: ExecuTorch cannot load this program ({str(exc).strip()[:300]})") from None
    return program, metadata


@dataclass
class ExecuTorchEngine(FileEngine):
    """An ExecuTorch ``forward`` method behind the ``Engine`` interface: NCHW float32 batches
    in, float32 logits out."""

    method: Any = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: Any = None,
        device: str = "cpu",
        threads: int | None = None,
        preprocessing: Mapping[str, Any] | None = None,
    ) -> "ExecuTorchEngine":
        """``ExecuTorchEngine.load(None, "model.pte")``: the program names its architecture.

        ``threads``: XNNPACK's thread pool, which is one per process (None: ExecuTorch's default).
        """
        cls.check_options("executorch", weights, (".pte",),
                          "--weights model.pte (create one with `effnet export --format executorch`)", device, threads)
        cls.refuse_overrides(weights, preprocessing, "an ExecuTorch program")
        program, metadata = load_program(str(weights))
        if not metadata:
            raise PteModelError(f"{weights} has no effnet metadata: export it with `effnet export --format executorch`")
        if threads is not None:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            with quiet():  # the runtime logs the reset on stderr
                _unsafe_reset_threadpool(threads)
        arch = str(metadata.get("arch", "unknown"))
        cls.check_arch(weights, model, arch)
        with quiet():
            method = program.load_method("forward")
        labels = resolve_labels(metadata.get("labels", "imagenet1k"), int(metadata.get("num_classes", 1000)))
        return cls(name="executorch", arch=arch, preprocessing=Preprocessing.from_dict(metadata["preprocessing"]),
                   labels=labels, method=method, path=str(weights), metadata=metadata)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return run_rows(self.method, batch)


def run_rows(method: Any, batch: np.ndarray) -> np.ndarray:
    """``method`` (a batch-1 ``forward``) on each image of ``batch``, logits stacked."""
    import torch

    def run(row: np.ndarray) -> np.ndarray:
        # the runtime reads the tensor's memory as contiguous whatever its strides, and reuses
        # its output buffer on the next call: a contiguous copy in, a copy out
        return method.execute([torch.from_numpy(np.ascontiguousarray(row))])[0].numpy().copy()

    return run_in_fixed_batches(run, np.asarray(batch, dtype=np.float32), 1)
