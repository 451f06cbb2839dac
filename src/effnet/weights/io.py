"""Reading checkpoints safely, and the one safetensors header writer and reader.

Files are tensors, never code: ``.safetensors``, torch files opened with ``weights_only=True``,
Keras files (``.keras``, ``.h5``) read with h5py alone, without Keras or TensorFlow (their
tensors are kept as ``<layer name>/<index>`` until ``sources/keras.py`` maps them), Paddle
``.pdparams`` through an allow-list unpickler (``pdparams.py``) and MindSpore ``.ckpt``
through a protobuf decoder (``mindspore_ckpt.py``), neither framework needed. Anything else
is a one-line ``WeightsError``. The suffix picks the reader, and the content where a suffix
is shared: a ``.ckpt`` is PyTorch (Lightning) or MindSpore, told apart by its first byte.

Our own safetensors carry their weights entry in the header (``metadata_from_entry``, written
by ``effnet convert`` and ``effnet train``); ``entry_from_metadata`` reads it back.
"""

from __future__ import annotations

import io
import json
import math
import os
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import numpy as np
import torch

from .._files import staged
from ..data.transforms import CropMode, Interpolation, Preprocessing
from ..errors import UnknownWeightsError, UsageError, WeightsError
from ..models.spec import Padding
from ..models.variants import canonical_name
from .entry import WeightsEntry
from .mindspore_ckpt import FIRST_BYTE as MINDSPORE_FIRST_BYTE
from .mindspore_ckpt import read_mindspore_ckpt
from .pdparams import read_pdparams
from .sources import StateDict

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


# -- reading files safely -----------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Tensors and string metadata from ``.safetensors``, a torch, Keras, Paddle or MindSpore
    file, never unpickling code.

    Torch files are opened with ``weights_only=True``; common wrappers
    (``{"state_dict": ...}``, ``{"model": ...}``, ``{"state_dict_ema": ...}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: weights file is empty")
    if path.suffix.lower() == ".onnx":
        raise UnknownWeightsError(
            f"{path}: an ONNX model, not PyTorch weights; pass the .safetensors/.pth it was exported from "
            "(predict, eval and serve run .onnx files directly)"
        )
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        return read_keras(path)
    if suffix == ".pdparams":
        return read_pdparams(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                return {k: handle.get_tensor(k) for k in handle.keys()}, metadata
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
    with path.open("rb") as handle:
        magic = handle.read(4)
    if suffix == ".ckpt" and magic[:1] == MINDSPORE_FIRST_BYTE:
        return read_mindspore_ckpt(path)
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch's zip format, or a legacy pickle
        raise WeightsError(f"{path}: {_unknown_format(suffix)}; this file starts with {magic!r}")
    try:
        with warnings.catch_warnings():  # torch's note on pickle protocols would precede our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refusing to load: the file holds Python objects beyond tensors ({_refused(path, str(exc))}); "
            "save its state_dict() instead"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: corrupt or truncated checkpoint ({str(exc).splitlines()[0][:160]})") from None
    return unwrap_state_dict(obj, str(path)), {}


def _unknown_format(suffix: str) -> str:
    """What a file of this suffix should have been."""
    if suffix == ".ckpt":
        return ("neither a PyTorch checkpoint (a zip archive or a pickle) nor a MindSpore one (protobuf, "
                "starting with 0x0a)")
    return "not a PyTorch checkpoint, safetensors or Keras file (a .pth/.pt is a zip archive or a pickle)"


def _refused(path: Path, message: str) -> str:
    """What the safe loader refused, by name (``posix.system``): torch names it for a global
    it blocks; for a file it cannot even step through (``Unsupported operand``) the pickle's
    own globals are listed, read with pickletools, never executed."""
    named = re.search(r"GLOBAL ([\w.]+)", message)
    if named:
        return named.group(1)
    found = [name for name in _pickle_globals(path) if not name.startswith(_TORCH_GLOBALS)]
    return ", ".join(dict.fromkeys(found)) or "an object torch's safe loader refuses"


#: globals every torch checkpoint holds (tensor rebuilders, storages, OrderedDict)
_TORCH_GLOBALS = ("torch.", "collections.OrderedDict")


def _pickle_globals(path: Path) -> list[str]:
    """``module.name`` of every global a pickle (or a torch zip's ``data.pkl``) refers to."""
    data = path.read_bytes()
    if data.startswith(b"PK\x03\x04"):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            member = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
            data = archive.read(member) if member else b""
    names: list[str] = []
    strings: list[str] = []
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if isinstance(argument, str):
                strings.append(argument)
            if opcode.name == "GLOBAL":
                names.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
    except (ValueError, EOFError, KeyError):  # a malformed stream: report what was read
        pass
    return names


def unwrap_state_dict(obj: Any, name: str) -> StateDict:
    if isinstance(obj, Mapping):
        for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k).removeprefix("module."): v for k, v in obj.items()}
    raise WeightsError(f"{name}: no state dict of tensors found in this file")


# -- Keras files --------------------------------------------------------------------------
def read_keras(path: Path) -> tuple[StateDict, dict[str, str]]:
    """``.keras`` archives, Keras 3 ``.weights.h5`` and legacy (Keras 2 / keras-applications)
    ``.h5`` files -> ``{"<layer>/<i>": tensor}`` plus, in the metadata, the preprocessing
    layers the model config puts before the stem (``keras_preprocessing``, when there is a
    config) and the layer order (``keras_layers``)."""
    import h5py

    config: dict[str, Any] | None = None
    try:
        if path.suffix.lower() == ".keras":
            with zipfile.ZipFile(path) as archive:
                config = json.loads(archive.read("config.json"))
                weights = io.BytesIO(archive.read("model.weights.h5"))
            with h5py.File(weights, "r") as handle:
                layers = dict(_keras3_layers(handle))
        else:
            with h5py.File(path, "r") as handle:
                if "model_config" in handle.attrs:
                    config = json.loads(_text(handle.attrs["model_config"]))
                group = handle["model_weights"] if "model_weights" in handle else handle
                if "layer_names" in group.attrs:
                    layers = dict(_legacy_layers(group))
                else:
                    layers = dict(_keras3_layers(handle))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable Keras file ({str(exc).splitlines()[0][:160]})") from None
    if not layers:
        raise WeightsError(f"{path}: no weights found in this Keras file")
    state = {f"{name}/{i}": torch.from_numpy(np.array(array)) for name, arrays in layers.items()
             for i, array in enumerate(arrays)}
    metadata = {"keras_layers": json.dumps(list(layers))}
    if config is not None:
        metadata["keras_preprocessing"] = json.dumps(_preprocessing_layers(config))
    return state, metadata


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _legacy_layers(group: Any) -> Iterator[tuple[str, list[np.ndarray]]]:
    """Keras 2 layout: ``layer_names`` attr, each layer's ``weight_names`` in variable order."""
    for raw in group.attrs["layer_names"]:
        name = _text(raw)
        names = [_text(w) for w in group[name].attrs.get("weight_names", [])]
        if names:
            yield name, [group[name][w][()] for w in names]


def _keras3_layers(handle: Any) -> Iterator[tuple[str, list[np.ndarray]]]:
    """Keras 3 layout: ``layers/<auto name>/vars/<i>``; the ``vars`` group's ``name`` attribute
    is the layer's real name. Nested models are walked; optimizer state is not model weights."""
    found: list[tuple[str, Any]] = []

    def visit(name: str, obj: Any) -> None:
        if name.startswith("layers/") and name.endswith("/vars") and len(obj):
            found.append((_text(obj.attrs.get("name", name.rsplit("/", 2)[-2])), obj))

    handle.visititems(visit)
    for name, vars_group in found:
        yield name, [vars_group[str(i)][()] for i in range(len(vars_group))]


def _preprocessing_layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The Rescaling/Normalization layers (with their settings) before the first Conv2D."""
    layers = config.get("config", {}).get("layers", [])
    found = []
    for layer in layers:
        kind, settings = layer.get("class_name"), layer.get("config", {})
        if kind in ("Conv2D", "Functional", "Sequential", "Model"):
            break
        if kind == "Rescaling":
            found.append({"kind": kind, "scale": settings.get("scale", 1.0), "offset": settings.get("offset", 0.0)})
        elif kind == "Normalization":
            found.append({"kind": kind, "name": settings.get("name", layer.get("name")),
                          "mean": settings.get("mean"), "variance": settings.get("variance"),
                          "invert": settings.get("invert", False)})
    return found


# -- our safetensors header -----------------------------------------------------------------
def write_safetensors(state: StateDict, path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename) with JSON-encoded metadata values. A failed
    write (a full disk) is the ``OSError`` it is, not safetensors' own error type."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with staged(path) as temporary:
        try:
            save_file({k: v.contiguous() for k, v in state.items()}, str(temporary), metadata=encoded)
        except SafetensorError as error:
            found = re.search(r"\(os error (\d+)\)", str(error))  # "I/O error: No space left ... (os error 28)"
            if found is None:
                raise
            code = int(found.group(1))
            raise OSError(code, os.strerror(code), str(path)) from None
        _sort_metadata(temporary)


def _sort_metadata(path: Path) -> None:
    """Rewrite the header's ``__metadata__`` with its keys sorted, in place.

    safetensors keeps the metadata in a hash map and writes it in a random order, so the same
    weights converted twice gave two files with different sha256 sums. The sorted header has
    the same keys and values, hence the same length (the spaces safetensors pads with fill any
    difference in escaping); if it would not fit, the file is left as written.
    """
    with open(path, "r+b") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
        if "__metadata__" not in header:
            return
        metadata = header.pop("__metadata__")
        ordered = {"__metadata__": dict(sorted(metadata.items())), **header}
        text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= length:
            handle.seek(8)
            handle.write(text.ljust(length, b" "))


def metadata_from_entry(entry: WeightsEntry, **provenance: Any) -> dict[str, Any]:
    """The safetensors header ``entry_from_metadata`` reads back (``effnet convert`` and
    ``effnet train`` both write it), plus ``provenance`` keys kept for people, not read."""
    header: dict[str, Any] = {
        "format": "effnet", "name": entry.name, "arch": entry.arch, "padding": entry.padding.value,
        "bn_eps": entry.bn_eps, "preprocessing": entry.preprocessing.to_dict(),
        "labels": list(entry.labels) if isinstance(entry.labels, tuple) else entry.labels,
        "num_classes": entry.num_classes, "top1": entry.top1, "top5": entry.top5, "reported_by": entry.reported_by,
    }
    if entry.extra.get("shape"):
        header["shape"] = entry.extra["shape"]
    return header | provenance


#: What a header may claim: the range real networks and image pipelines use. A value outside
#: it is a crafted or corrupt file, refused before it can size an allocation or a resize.
IMAGE_SIZES = (8, 4096)
CLASS_COUNTS = (1, 100_000)
MULTIPLIERS = (0.0, 16.0)  # width/depth multipliers: exclusive of 0 (L2 uses 4.3 and 5.3)
SHAPE_KEYS = ("width_mult", "depth_mult")


def entry_from_metadata(metadata: Mapping[str, str], path: Path) -> WeightsEntry | None:
    """Rebuild the entry that ``metadata_from_entry`` stored in a safetensors header.

    A header is untrusted input: every value must parse and lie in a sane range, or a
    one-line ``WeightsError`` names the key. (Whether the tensors fit what it claims is
    checked before any module is built, in ``conversion``/``loading``.)
    """
    if "arch" not in metadata:
        return None
    header = _Header(metadata, path)
    num_classes = header.integer("num_classes", header.json("num_classes", 1000), CLASS_COUNTS)
    shape = header.shape()
    return WeightsEntry(
        name=metadata.get("name", f"{metadata['arch']}.file"),
        arch=header.arch(),
        source="effnet",
        file=str(path),
        padding=Padding(header.choice("padding", metadata.get("padding", "symmetric"), [p.value for p in Padding])),
        bn_eps=header.number("bn_eps", header.json("bn_eps", 1e-5), (0.0, 1.0)),
        preprocessing=header.preprocessing(),
        labels=header.labels(num_classes),
        num_classes=num_classes,
        top1=header.accuracy("top1"),
        top5=header.accuracy("top5"),
        reported_by=metadata.get("reported_by", ""),
        extra={"shape": shape} if shape else {},
    )


class _Header:
    """Typed, bounded reads of one safetensors header; every failure is a ``WeightsError``."""

    def __init__(self, metadata: Mapping[str, str], path: Path) -> None:
        self.metadata, self.path = metadata, path

    def fail(self, key: str, why: str) -> WeightsError:
        return WeightsError(f"{self.path}: bad '{key}' in the safetensors header: {why}")

    def json(self, key: str, default: Any) -> Any:
        """A JSON-encoded value (``write_safetensors`` encodes every value but strings)."""
        if key not in self.metadata:
            return default
        try:
            return json.loads(self.metadata[key], parse_constant=str)  # NaN/Infinity: strings, refused below
        except json.JSONDecodeError:
            raise self.fail(key, f"not valid JSON: {self.metadata[key][:60]!r}") from None

    def arch(self) -> str:
        try:
            return canonical_name(self.metadata["arch"])
        except UsageError:
            raise self.fail("arch", f"no model is called {self.metadata['arch'][:60]!r}") from None

    def choice(self, key: str, value: Any, allowed: Sequence[str]) -> str:
        if value not in allowed:
            raise self.fail(key, f"{str(value)[:60]!r} is not one of {', '.join(allowed)}")
        return value

    def number(self, key: str, value: Any, bounds: tuple[float, float], *, inclusive: bool = False) -> float:
        """A finite number strictly between ``bounds`` (up to the upper one when ``inclusive``)."""
        low, high = bounds
        real = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not real or not (low < value < high or (inclusive and value == high)):
            raise self.fail(key, f"{str(value)[:60]} is not a number in ({low:g}, {high:g}{']' if inclusive else ')'}")
        return float(value)

    def integer(self, key: str, value: Any, bounds: tuple[int, int]) -> int:
        low, high = bounds
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"{str(value)[:60]} is not a whole number in [{low}, {high}]")
        return value

    def accuracy(self, key: str) -> float | None:
        value = self.json(key, None)
        return None if value is None else self.number(key, value, (0.0, 100.0), inclusive=True)

    def labels(self, num_classes: int) -> str | tuple[str, ...]:
        """A label set's name (``imagenet1k``), or a JSON list of one name per class."""
        raw = self.metadata.get("labels", "imagenet1k")
        if not raw.startswith("["):
            return raw
        names = self.json("labels", [])
        if not all(isinstance(name, str) for name in names):
            raise self.fail("labels", "class names must be strings")
        if len(names) != num_classes:
            raise self.fail("labels", f"{len(names)} names for {num_classes} classes")
        return tuple(names)

    def preprocessing(self) -> Preprocessing:
        """The recipe, each field checked (a size of 0 or 60000 would only fail, or exhaust
        memory, at the first image)."""
        recipe = self.json("preprocessing", {})
        if not isinstance(recipe, dict):
            raise self.fail("preprocessing", f"expected an object, not {str(recipe)[:60]}")
        unknown = sorted(map(str, set(recipe) - set(Preprocessing.__dataclass_fields__)))
        if unknown:
            raise self.fail("preprocessing", f"unknown keys {', '.join(unknown)}")
        settings: dict[str, Any] = {}
        if "size" in recipe:
            settings["size"] = self.integer("preprocessing.size", recipe["size"], IMAGE_SIZES)
        if "crop_fraction" in recipe:
            settings["crop_fraction"] = self.number("preprocessing.crop_fraction", recipe["crop_fraction"], (0.0, 1.0),
                                                    inclusive=True)
        for name, allowed in (("crop_mode", get_args(CropMode)), ("interpolation", get_args(Interpolation))):
            if name in recipe:
                settings[name] = self.choice(f"preprocessing.{name}", recipe[name], allowed)
        for name, bounds in (("mean", (-10.0, 10.0)), ("std", (0.0, 10.0))):
            if name in recipe:
                values = recipe[name]
                if not isinstance(values, list) or len(values) != 3:
                    raise self.fail(f"preprocessing.{name}", f"expected 3 numbers, not {str(values)[:60]}")
                settings[name] = tuple(self.number(f"preprocessing.{name}", v, bounds) for v in values)
        return Preprocessing(**settings)

    def shape(self) -> dict[str, float]:
        """Width/depth multipliers of a custom-shaped trained model (``effnet train``)."""
        shape = self.json("shape", {})
        if not isinstance(shape, dict) or set(shape) - set(SHAPE_KEYS):
            raise self.fail("shape", f"expected an object with {' and/or '.join(SHAPE_KEYS)}, not {str(shape)[:60]}")
        return {name: self.number(f"shape.{name}", value, MULTIPLIERS, inclusive=True) for name, value in shape.items()}
