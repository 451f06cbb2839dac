"""Inference backends behind one interface: ``backend(batch NCHW float32) -> logits``.

Each backend also says which preprocessing and labels its weights expect, so callers never
consult the registry themselves. Backends are imported lazily: the ONNX one never imports torch.
"""

from __future__ import annotations

import os
from typing import Any

from .base import Backend

BACKENDS = ("torch", "onnx")


def resolve_backend(kind: str | None, weights: Any) -> str:
    """``auto``/``None``: onnx for an ``.onnx`` file, else torch; a torch backend asked to
    load an ``.onnx`` file is told what to do instead of failing inside torch.load."""
    is_onnx = isinstance(weights, (str, os.PathLike)) and str(weights).lower().endswith(".onnx")
    if kind in (None, "auto"):
        return "onnx" if is_onnx else "torch"
    if kind == "torch" and is_onnx:
        from ..errors import UsageError

        raise UsageError(f"{weights} is an ONNX file: run it with --backend onnx (or leave --backend out)")
    return kind


def open_backend(kind: str | None, model: str | None, weights: Any = "default", **options: Any) -> Backend:
    """``open_backend("torch", "efficientnet_lite0", "default")`` -> a ready backend.

    ``kind`` ``"auto"`` (or ``None``) picks by the weights file (see ``resolve_backend``).
    """
    kind = resolve_backend(kind, weights)
    if kind == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend.load(model, weights, **options)
    if kind == "onnx":
        from .onnx_backend import OnnxBackend  # type: ignore[import-not-found]

        return OnnxBackend.load(model, weights, **options)
    from ..errors import UsageError

    raise UsageError(f"unknown backend '{kind}'; choose one of: {', '.join(BACKENDS)}")
