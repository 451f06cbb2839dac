"""The effnet ONNX metadata contract: the one writer and the one reader.

An ONNX file effnet writes (``effnet export``, ``effnet quantize``, bench's exports)
carries everything needed to use it (architecture, weights, padding, preprocessing, labels,
input layout, how it was quantized) as ``metadata_props`` with keys ``effnet.<name>`` and
JSON values, so the file alone is enough to run it. Pure Python: reading a mapping needs no
ONNX package, and reading a file needs only onnxruntime.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

#: Every key effnet writes into an ONNX file's metadata starts with this.
PREFIX = "effnet."
#: Version of the contract (``effnet.format``).
FORMAT = 1
#: ``effnet.input`` values: what the graph's single input is.
INPUT_FLOAT = "float32_nchw"
INPUT_RGB = "uint8_nhwc_rgb"
INPUT_BGR = "uint8_nhwc_bgr"
#: NV12 frames of one fixed size, uint8 [N, H * 3 / 2, W] (``data.nv12``); ``effnet.nv12``
#: holds {"height", "width", "range"}
INPUT_NV12 = "uint8_nv12"
INPUT_LAYOUTS = (INPUT_FLOAT, INPUT_RGB, INPUT_BGR, INPUT_NV12)


def decode(values: Mapping[str, str]) -> dict[str, Any]:
    """``effnet.*`` entries of a ``custom_metadata_map`` (or ``metadata_props``), JSON-decoded."""
    decoded: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(PREFIX):
            try:
                decoded[key[len(PREFIX):]] = json.loads(value)
            except json.JSONDecodeError:
                decoded[key[len(PREFIX):]] = value
    return decoded


def encode(values: Mapping[str, Any]) -> dict[str, str]:
    """The inverse of ``decode``: prefixed keys, JSON values (strings stay plain)."""
    return {PREFIX + k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def read_metadata(source: str | os.PathLike | Mapping[str, str]) -> dict[str, Any]:
    """The effnet metadata of an ONNX file, or of a mapping already read from one."""
    if isinstance(source, Mapping):
        return decode(source)
    from .onnxruntime_engine import open_session

    return decode(open_session(source, threads=1, optimize=False).get_modelmeta().custom_metadata_map)


def write_metadata(model: Any, metadata: Mapping[str, Any]) -> Any:
    """Replace an ``onnx.ModelProto``'s metadata with ``metadata`` (the one writer)."""
    from onnx import helper

    del model.metadata_props[:]
    helper.set_model_props(model, encode({"format": FORMAT, **metadata}))
    model.producer_name = "effnet"
    arch, weights = metadata.get("arch", "unknown"), metadata.get("weights", "")
    model.doc_string = f"{arch} ({weights}) exported by effnet; input {metadata.get('input', INPUT_FLOAT)}"
    return model
