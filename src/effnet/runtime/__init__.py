"""Inference backends behind one interface: ``backend(batch NCHW float32) -> logits``.

Each backend also says which preprocessing and labels its weights expect, so callers never
consult the registry themselves. Backends are imported lazily: the ONNX one never imports torch.
"""

from __future__ import annotations

from typing import Any

from .base import Backend

BACKENDS = ("torch", "onnx")


def open_backend(kind: str, model: str | None, weights: Any = "default", **options: Any) -> Backend:
    """``open_backend("torch", "efficientnet_lite0", "default")`` -> a ready backend."""
    if kind == "torch":
        from .torch_backend import TorchBackend

        return TorchBackend.load(model, weights, **options)
    if kind == "onnx":
        from .onnx_backend import OnnxBackend  # type: ignore[import-not-found]

        return OnnxBackend.load(model, weights, **options)
    from ..errors import UsageError

    raise UsageError(f"unknown backend '{kind}'; choose one of: {', '.join(BACKENDS)}")
