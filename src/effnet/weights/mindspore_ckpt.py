"""Reading MindSpore ``.ckpt`` files without MindSpore: protobuf, decoded by hand.

The schema is MindSpore's ``checkpoint.proto`` (``mindspore/train/checkpoint_pb2.py`` in the
2.x wheels)::

    message Checkpoint {
      message Value {
        required string tag = 1;
        oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; }
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;           // [0] means a scalar
      required string tensor_type = 2;   // "Float32", "Float16", "BFloat16", "Int32", ..., "str"
      required bytes tensor_content = 3; // C order, little-endian
    }

``save_checkpoint`` writes one ``Checkpoint`` message per tensor back to back (parsing the
concatenation merges them), splits a tensor over 512 MiB into consecutive values with the
same tag, and with ``crc_check=True`` ends the file with ``b"crc_num"`` and the CRC-32 of
everything before it as 10 big-endian bytes, which is verified here. String values
(``append_dict`` text) become metadata. Map tensors (embedding tables) and encrypted files
are refused. Only lengths read from the file size slices of it, and every tensor's byte count
must equal its shape's, so no allocation exceeds the file.

A ``.ckpt`` may also be a PyTorch (Lightning) checkpoint; ``io.read_checkpoint`` tells them
apart by their first byte.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Iterator
from pathlib import Path

import torch

from ..errors import WeightsError

StateDict = dict[str, torch.Tensor]

#: A MindSpore checkpoint starts with the key of ``Checkpoint.value`` (field 1, length-delimited).
FIRST_BYTE = b"\x0a"

_DTYPES: dict[str, torch.dtype] = {
    "Float16": torch.float16, "Float32": torch.float32, "Float64": torch.float64, "BFloat16": torch.bfloat16,
    "Int8": torch.int8, "Int16": torch.int16, "Int32": torch.int32, "Int64": torch.int64,
    "UInt8": torch.uint8, "UInt16": torch.uint16, "UInt32": torch.uint32, "UInt64": torch.uint64,
    "Bool": torch.bool,
}
_CRC_MARK = b"crc_num"
_CRC_TRAILER = len(_CRC_MARK) + 10


class _Truncated(ValueError):
    """The data ends inside a field."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    """A base-128 varint at ``pos`` -> (value, next position)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise _Truncated(f"a number at byte {pos} runs past the end")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise ValueError(f"a number at byte {pos} is longer than 10 bytes")


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """(field number, wire type, value) of each field of one message: an int for varints, a
    view for length-delimited fields. Fixed-width and group fields have no place in a
    checkpoint and are refused."""
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError(f"field number 0 at byte {start}")
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, wire, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _Truncated(f"a field at byte {start} needs {size} bytes, {len(data) - pos} are left")
            yield number, wire, data[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"wire type {wire} at byte {start}")


def _text(value: int | memoryview, what: str) -> str:
    if not isinstance(value, memoryview):
        raise ValueError(f"{what} is not a string")
    return bytes(value).decode("utf-8")


def _tensor_proto(data: memoryview) -> tuple[list[int], str, memoryview]:
    """TensorProto -> (dims, tensor_type, tensor_content); dims packed or not."""
    dims: list[int] = []
    dtype: str | None = None
    content: memoryview | None = None
    for number, wire, value in _fields(data):
        if number == 1 and isinstance(value, int):
            dims.append(value)
        elif number == 1:
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                dims.append(dim)
        elif number == 2:
            dtype = _text(value, "tensor_type")
        elif number == 3 and isinstance(value, memoryview):
            content = value
        else:
            raise ValueError(f"unexpected field {number} in a tensor")
    if dtype is None or content is None:
        raise ValueError("a tensor without type or content")
    if any(d >= 1 << 63 for d in dims):
        raise ValueError(f"negative dimension in {dims}")
    return dims, dtype, content


def _values(data: memoryview) -> Iterator[tuple[str, list[int], str, memoryview]]:
    """(tag, dims, type, content) of each ``Checkpoint.value``, in file order."""
    for number, wire, value in _fields(data):
        if number != 1 or not isinstance(value, memoryview):
            raise ValueError(f"unexpected top-level field {number} (wire type {wire})")
        tag: str | None = None
        tensor: tuple[list[int], str, memoryview] | None = None
        for inner, _, item in _fields(value):
            if inner == 1:
                tag = _text(item, "tag")
            elif inner == 2 and isinstance(item, memoryview):
                tensor = _tensor_proto(item)
            elif inner == 3:
                raise WeightsError(f"'{tag or '?'}' is a map tensor (an embedding table), which is not supported")
            else:
                raise ValueError(f"unexpected field {inner} in a checkpoint value")
        if tag is None or tensor is None:
            raise ValueError("a checkpoint value without tag or tensor")
        yield (tag, *tensor)


def read_mindspore_ckpt(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Tensors of a MindSpore ``.ckpt`` file, and its string values as metadata."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    if len(data) >= _CRC_TRAILER and bytes(data[-_CRC_TRAILER:-10]) == _CRC_MARK:
        expected = int.from_bytes(data[-10:], "big")
        data = data[:-_CRC_TRAILER]
        if binascii.crc32(data) != expected:
            raise WeightsError(f"{path}: CRC check failed: the MindSpore checkpoint is corrupt")
    try:
        state, metadata = _decode(data)
    except WeightsError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    except _Truncated as exc:
        raise WeightsError(f"{path}: truncated MindSpore checkpoint ({exc})") from None
    except (ValueError, UnicodeDecodeError, RuntimeError) as exc:
        raise WeightsError(f"{path}: not a MindSpore checkpoint, or a corrupt one "
                           f"({str(exc).splitlines()[0][:160]})") from None
    if not state:
        raise WeightsError(f"{path}: no tensors in this MindSpore checkpoint")
    return state, metadata


def _decode(data: memoryview) -> tuple[StateDict, dict[str, str]]:
    """Join each tag's consecutive slices, then make one tensor per tag."""
    parts: dict[str, tuple[list[int], str, list[memoryview]]] = {}
    previous: str | None = None
    for tag, dims, dtype, content in _values(data):
        if tag in parts and tag != previous:
            raise ValueError(f"'{tag}' appears twice")
        if tag in parts:
            if parts[tag][:2] != (dims, dtype):
                raise ValueError(f"slices of '{tag}' disagree on shape or type")
            parts[tag][2].append(content)
        else:
            parts[tag] = (dims, dtype, [content])
        previous = tag
    state: StateDict = {}
    metadata: dict[str, str] = {}
    for tag, (dims, dtype, chunks) in parts.items():
        content = bytearray().join(chunks)
        if dtype == "str":
            metadata[tag] = content.decode("utf-32-le").rstrip("\x00")
            continue
        if dtype not in _DTYPES:
            raise ValueError(f"'{tag}' has unsupported type {dtype}")
        shape = [] if dims == [0] else dims
        count, itemsize = math.prod(shape), _DTYPES[dtype].itemsize
        if len(content) != count * itemsize:
            error = _Truncated if len(content) < count * itemsize else ValueError
            raise error(f"'{tag}' {dtype}{shape} needs {count * itemsize} bytes, has {len(content)}")
        if count:
            state[tag] = torch.frombuffer(content, dtype=_DTYPES[dtype]).reshape(shape)
        else:
            state[tag] = torch.empty(shape, dtype=_DTYPES[dtype])
    return state, metadata
