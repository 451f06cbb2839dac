"""A network to ExecuTorch: a ``.pte`` program with the XNNPACK delegate (PyTorch's own
mobile path), checked in ExecuTorch's runtime before it is written.

``torch.export`` captures the network at batch 1 and the weights' own size (float32 NCHW,
normalized: what effnet's preprocessing makes), ``to_edge_transform_and_lower`` hands every
op XNNPACK supports to the XNNPACK delegate (on EfficientNet: all of them), and the program
gets effnet's metadata as a constant method (``runtime.executorch_engine``). Before the file
is written the program runs in ExecuTorch's runtime on deterministic photo-like images and
must match torch (logits within tolerance, same top-1); otherwise nothing is written.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import check_writable, staged
from ..._quiet import quiet
from ...data.transforms import Preprocessing
from ...errors import UsageError
from ...runtime import ENGINES
from ...runtime.executorch_engine import INPUT_FLOAT_NCHW, METADATA_METHOD, load_program, run_rows
from .onnx import (FLOAT32_SLACK, ExportError, _refuse_failed, _test_image, float32_error, network_metadata,
                   torch_logits, weights_preprocessing)

#: Max abs logits difference accepted between the program and torch (measured on Lite0: 6e-6),
#: unless torch's own float32 error is larger.
TOLERANCE = 1e-3


@dataclass
class PteExportResult:
    """The written program, what it holds and the check it passed."""

    path: Path
    arch: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    replaced: bool = False


def check_installed() -> None:
    """The export needs what the executorch engine needs (the ``executorch`` extra)."""
    reason = ENGINES["executorch"].missing()
    if reason:
        raise UsageError(f"--format executorch: {reason}")


def lower(net: Any, size: int, metadata: dict[str, Any]) -> bytes:
    """``net`` (batch 1, ``size`` x ``size``) as a ``.pte`` program delegated to XNNPACK."""
    import torch

    with quiet():
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower

            exported = torch.export.export(net, (torch.zeros(1, 3, size, size),))
            lowered = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()],
                                                  constant_methods={METADATA_METHOD: json.dumps(metadata)})
            return bytes(lowered.to_executorch().buffer)
        except Exception as exc:
            raise ExportError(f"ExecuTorch lowering failed: {str(exc).strip().splitlines()[0][:300]}") from exc


def check(path: Path, net: Any, preprocessing: Preprocessing) -> list[dict[str, Any]]:
    """The program (loaded from ``path`` as a user would) vs torch on photo-like images."""
    images = [_test_image(h, w, seed) for seed, (h, w) in enumerate([(301, 457), (480, 353), (256, 256)])]
    inputs = np.stack([preprocessing(image) for image in images]).astype(np.float32)
    program, _ = load_program(str(path))
    with quiet():
        actual = run_rows(program.load_method("forward"), inputs)
    expected = torch_logits(net, inputs)
    own_error = float32_error(net, inputs, expected)
    return [{"what": "ExecuTorch vs torch", "shape": list(inputs.shape),
             "max_abs_diff": float(np.abs(actual - expected).max()),
             "tolerance": max(TOLERANCE, FLOAT32_SLACK * own_error),
             "same_top1": bool((actual.argmax(1) == expected.argmax(1)).all())}]


def export_executorch(model: str | None = None, weights: Any = "default", output: str | os.PathLike = "model.pte",
                      *, log: Callable[[str], None] | None = None) -> PteExportResult:
    """Load ``model`` with ``weights`` (as every command does), then ``export_executorch_network``."""
    check_installed()
    check_writable(output)
    from ...runtime.torch_engine import TorchEngine  # torch: only once an export really runs

    started = time.perf_counter()
    engine = TorchEngine.load(model, weights, channels_last=False)
    result = export_executorch_network(engine.model, output, log=log)
    result.seconds = time.perf_counter() - started
    return result


def export_executorch_network(net: Any, output: str | os.PathLike, *,
                              log: Callable[[str], None] | None = None) -> PteExportResult:
    """Lower a built ``EfficientNet`` at its weights' input size (batch 1), check it in
    ExecuTorch's runtime and write ``output``. ``net`` is left as it was (a CPU copy is
    lowered). Raises ``ExportError`` (nothing written) when the check fails."""
    check_installed()
    replaced = check_writable(output)
    say = log or (lambda message: None)
    started = time.perf_counter()
    net = copy.deepcopy(net).cpu().eval()
    preprocessing = weights_preprocessing(net)
    size = preprocessing.size
    metadata = {**network_metadata(net, preprocessing, INPUT_FLOAT_NCHW), "precision": "fp32",
                "delegate": "XNNPACK"}
    say(f"lowering {net.plan.name} to ExecuTorch with the XNNPACK delegate ({size}x{size}, batch 1) ...")
    program = lower(net, size, metadata)
    output = Path(output)
    with staged(output) as temporary:
        temporary.write_bytes(program)
        say("checking: ExecuTorch runtime vs torch ...")
        checks = check(temporary, net, preprocessing)
        _refuse_failed(checks)
    return PteExportResult(output, net.plan.name, checks, time.perf_counter() - started, metadata, replaced)
