"""onnxruntime sessions on the graphs of a run (files, or graphs still in memory), and
batched runs over a set of inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...runtime.onnxruntime_engine import open_session
from .recipe import BATCH_SIZE


def session(model: Any, threads: int | None = None, optimize: bool = True) -> Any:
    """A session on a file or on an ``onnx.ModelProto``; ``optimize=False`` runs the graph op
    by op as written (a QDQ graph then computes in float: the int8 kernels' reference)."""
    return open_session(model if isinstance(model, (str, Path)) else model.SerializeToString(), threads, optimize)


def run_batches(running: Any, inputs: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The session's logits for every input, ``batch_size`` at a time."""
    name = running.get_inputs()[0].name
    return np.concatenate([running.run(None, {name: inputs[i : i + batch_size]})[0]
                           for i in range(0, len(inputs), batch_size)])
