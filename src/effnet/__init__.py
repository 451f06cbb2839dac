"""effnet: the EfficientNet family (V1, Lite, V2) end to end.

Public API (resolved lazily so that ``import effnet`` does not import torch)::

    effnet.create_model("efficientnet_b3", num_classes=10, drop_path_rate=0.2)
    effnet.list_models()
    effnet.get_weights("efficientnet_lite0.tf_in1k")
    effnet.Predictor("efficientnet_lite0")(image)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("effnet")  # one source: pyproject.toml
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

_PUBLIC = {
    "create_model": "effnet.weights.loading",
    "list_models": "effnet.models.variants",
    "get_weights": "effnet.weights.registry",
    "list_weights": "effnet.weights.registry",
    "Predictor": "effnet.runtime.predictor",
    "Preprocessing": "effnet.data.transforms",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'effnet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
