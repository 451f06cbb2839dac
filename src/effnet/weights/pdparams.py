"""Reading Paddle ``.pdparams`` files without Paddle, and without running anything in them.

A ``.pdparams`` file is what ``paddle.save(layer.state_dict(), path)`` writes: a pickle
(protocol 2 to 4) of a dict from structured names (``_ef._blocks.1.._ecn._conv._bn._mean``)
to numpy arrays, plus one entry ``StructuredToParameterName@@`` mapping each structured name
to its parameter name. Paddle loads a state dict by its structured names (``set_state_dict``
defaults to them), so those are the names kept here; the table is checked and dropped.

A pickle can call any Python function it names. ``_ArrayUnpickler`` resolves only what a
dict of numeric arrays needs (numpy's array and dtype reconstruction, ``OrderedDict``, and
``_codecs.encode`` for protocol 2's bytes), each narrowed to the arguments array pickles
pass; every other global, and persistent ids, are refused before anything is called.
"""

from __future__ import annotations

import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import WeightsError

StateDict = dict[str, torch.Tensor]

#: The entry ``paddle.save`` adds to a state dict: structured name -> parameter name.
NAME_TABLE = "StructuredToParameterName@@"
#: dtype kinds an array of weights may have: bool, signed and unsigned integers, floats
NUMERIC_KINDS = "biuf"


class _Refused(pickle.UnpicklingError):
    """Something the allow-list does not cover; the message says what."""


def _ndarray(*args: Any, **kwargs: Any) -> np.ndarray:
    """Stands for ``numpy.ndarray``, which array pickles only pass to ``_reconstruct``:
    constructing an array directly (any shape, any buffer) is refused."""
    raise _Refused("the pickle calls numpy.ndarray directly")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct`` as pickled arrays call it: an empty array that
    the following BUILD fills from the pickle's bytes (numpy checks that their length fits the
    shape, so no allocation is larger than the file). Anything but that exact call is refused."""
    if subtype is not _ndarray or tuple(shape) != (0,) or typecode != b"b":
        raise _Refused("the pickle calls numpy's _reconstruct with unexpected arguments")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """``numpy.dtype`` for numeric and boolean types only (no object arrays), always a copy:
    the BUILD that follows must never change numpy's shared built-in descriptors."""
    dtype = np.dtype(spec, bool(align), True)
    if dtype.kind not in NUMERIC_KINDS:
        raise _Refused(f"the file holds an array of type {dtype}, not of numbers")
    return dtype


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode``, which protocol-2 pickles use to carry bytes, for latin-1 only."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"the pickle calls _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): _ndarray,
    ("numpy", "dtype"): _dtype,
    ("collections", "OrderedDict"): OrderedDict,
    ("_codecs", "encode"): _latin1,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals a ``.pdparams`` file of arrays needs."""

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise _Refused(f"the pickle asks for the Python global '{module}.{name}', which a .pdparams file "
                           "of arrays never needs")
        return allowed

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused("the pickle refers to persistent objects, which a .pdparams file never holds")


#: what a malformed or cut pickle raises while it is read
_CORRUPT = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            MemoryError, UnicodeDecodeError, OverflowError)


def read_pdparams(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Tensors of a ``.pdparams`` file under their structured names, and empty metadata (the
    file carries none)."""
    path = Path(path)
    data = path.read_bytes()
    if data[:1] != b"\x80":
        raise WeightsError(f"{path}: not a Paddle .pdparams file (a pickle starts with 0x80; "
                           f"this file starts with {data[:4]!r})")
    try:
        loaded = _ArrayUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        raise WeightsError(f"{path}: refusing to load: {exc}") from None
    except _CORRUPT as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: corrupt or truncated .pdparams file ({reason})") from None
    return _state_dict(loaded, path), {}


def _state_dict(loaded: Any, path: Path) -> StateDict:
    """The pickled dict's arrays as tensors; anything that is not a named numeric array is refused."""
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsError(f"{path}: not a Paddle state dict (the pickle holds a {type(loaded).__name__})")
    table = loaded.get(NAME_TABLE, {})
    if not isinstance(table, dict) or not all(isinstance(v, str) for v in table.values()):
        raise WeightsError(f"{path}: malformed '{NAME_TABLE}' entry")
    state: StateDict = {}
    for key, value in loaded.items():
        if key == NAME_TABLE:
            continue
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise WeightsError(f"{path}: entry {str(key)[:60]!r} is a {type(value).__name__}, not an array")
        if value.dtype.kind not in NUMERIC_KINDS or value.dtype.fields is not None or value.dtype.subdtype:
            raise WeightsError(f"{path}: entry '{key}' is an array of {value.dtype}, not of numbers")
        state[key] = torch.from_numpy(np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("=")))
    return state
