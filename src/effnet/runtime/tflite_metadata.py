"""The effnet TFLite metadata contract: the one writer and the one reader.

A ``.tflite`` file effnet writes carries the same truth as its ONNX files (architecture,
weights, padding, preprocessing, labels, input layout, how it was quantized): one JSON
document in the flatbuffer's ``metadata`` table under the name ``effnet``, the place TFLite
reserves for such data (the runtime ignores entries it does not know, so the file stays a
plain TFLite model for every other tool). Reading needs only ``flatbuffers`` and the schema
module that ``ai-edge-litert`` ships; no interpreter is created.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import EffnetError

#: The name of effnet's entry in the model's ``metadata`` table.
METADATA_NAME = "effnet"
#: Version of the contract (the ``format`` key).
FORMAT = 1
#: ``input`` values: what the model's single input is. TFLite models take NHWC.
INPUT_FLOAT_NHWC = "float32_nhwc"
#: uint8 RGB pixels already resized and cropped to the model's size (normalization is inside,
#: as in Google's published integer EfficientNet-Lite files).
INPUT_UINT8_NHWC = "uint8_nhwc_rgb_cropped"
INPUT_LAYOUTS = (INPUT_FLOAT_NHWC, INPUT_UINT8_NHWC)


class TfliteModelError(EffnetError, ValueError):
    """A file that is not a TFLite model effnet can read."""


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def read_metadata(source: str | os.PathLike | bytes) -> dict[str, Any]:
    """The effnet metadata of a ``.tflite`` file (or its bytes); ``{}`` when it has none."""
    data = source if isinstance(source, (bytes, bytearray)) else _read(source)
    schema = _schema()
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        name = "the data" if isinstance(source, (bytes, bytearray)) else str(source)
        raise TfliteModelError(f"{name} is not a TFLite model (no TFL3 identifier)")
    model = schema.Model.GetRootAs(data, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if (entry.Name() or b"").decode() != METADATA_NAME:
            continue
        buffer = model.Buffers(entry.Buffer())
        raw = buffer.DataAsNumpy().tobytes() if buffer.DataLength() else bytes(data[buffer.Offset():][:buffer.Size()])
        return json.loads(raw.decode())
    return {}


def write_metadata(data: bytes, metadata: Mapping[str, Any]) -> bytes:
    """``data`` (a serialized TFLite model) with its effnet entry replaced by ``metadata``."""
    from ai_edge_litert.tools import flatbuffer_utils

    schema = _schema()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    payload = json.dumps({"format": FORMAT, **metadata}, sort_keys=True).encode()
    kept = [entry for entry in (model.metadata or []) if _name(entry.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = list(payload)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = [*kept, entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read(path: str | os.PathLike) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise TfliteModelError(f"{path}: TFLite file not found")
    return path.read_bytes()
