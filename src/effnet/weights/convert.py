"""Checkpoints from other ecosystems -> our state dict, strictly; safe file I/O.

Our attribute names are timm's, so timm checkpoints load as they are; lukemelas,
torchvision and Keras map through one function each, driven by the network plan (which
block has an expansion conv, which has SE), never by regexes over names. Import is strict:
every source tensor must be used and every parameter and buffer of ours filled with a
tensor of the same shape, or a ``WeightsMismatchError`` says exactly which keys and shapes
differ.

Keras files (``.keras``, ``.h5``) are read with h5py alone, without Keras or TensorFlow.
Their tensors are kept as ``<layer name>/<index>`` (the layer's variables in Keras order)
until ``from_keras`` transposes them: conv kernels HWIO -> OIHW, depthwise HWC1 -> C1HW,
dense (in, out) -> (out, in). Keras puts its input normalization inside the model;
``keras_input_normalization`` turns those layers into the mean/std our preprocessing applies.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import staged
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..models.spec import BlockPlan, NetworkPlan
from .registry import Source, UnknownWeightsError, WeightsError

StateDict = dict[str, torch.Tensor]

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")


class WeightsMismatchError(WeightsError):
    """Tensors that do not fit the architecture: the message lists the differences."""


# -- reading files safely -----------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Tensors and string metadata from ``.safetensors``, a torch file or a Keras file,
    never unpickling code.

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
    if path.suffix.lower() in KERAS_SUFFIXES:
        return read_keras(path)
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
    if not (magic.startswith(b"PK\x03\x04") or magic[:1] == b"\x80"):  # torch's zip format, or a legacy pickle
        raise WeightsError(f"{path}: not a PyTorch checkpoint, safetensors or Keras file (a .pth/.pt is a zip "
                           f"archive or a pickle; this file starts with {magic!r})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        detail = text.split("WeightsUnpickler error:", 1)[-1].split("Check the documentation", 1)[0]
        reason = next((line.split(" was not", 1)[0].strip() for line in detail.splitlines() if line.strip()),
                      type(exc).__name__)
        raise WeightsError(
            f"{path}: refusing to load: the file holds Python objects beyond tensors ({reason[:160]}); "
            "save its state_dict() instead"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: corrupt or truncated checkpoint ({str(exc).splitlines()[0][:160]})") from None
    return unwrap_state_dict(obj, str(path)), {}


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


def write_safetensors(state: StateDict, path: str | Path, metadata: Mapping[str, Any]) -> None:
    """Write atomically (temp file + rename) with JSON-encoded metadata values."""
    from safetensors.torch import save_file

    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    with staged(path) as temporary:
        save_file({k: v.contiguous() for k, v in state.items()}, str(temporary), metadata=encoded)


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


def _is_keras_preprocessing(layer: str) -> bool:
    return layer.startswith(("normalization", "rescaling"))


def keras_input_normalization(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], plan: NetworkPlan
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The mean/std (0-1 scale) that reproduce the model's own preprocessing of 0-255 pixels.

    With a model config (``.keras``, full ``.h5``) the Rescaling and Normalization layers are
    composed exactly. A weights-only file has no config, so keras.applications' recipe is
    applied: V1 divides by 255 and normalizes with the file's mean/variance, and (as its
    ``weights="imagenet"`` path does) divides once more by sqrt(variance) when the stored
    variance is ImageNet's std, because those files store the std in the variance slot
    (tensorflow/tensorflow#49930); V2 B0-B3 use ImageNet mean/std and V2 S/M/L map pixels
    to [-1, 1] with (x / 128 - 1).
    """
    scale, offset = np.ones(3), np.zeros(3)

    def rescale(factor: Any, shift: Any) -> None:
        nonlocal scale, offset
        scale, offset = scale * np.asarray(factor, float), offset * np.asarray(factor, float) + np.asarray(shift, float)

    def normalize(mean: Any, variance: Any) -> None:
        root = np.sqrt(np.asarray(variance, float).reshape(-1))
        rescale(1.0 / root, -np.asarray(mean, float).reshape(-1) / root)

    def stored(name: str) -> tuple[np.ndarray, np.ndarray] | None:
        if f"{name}/0" in state and f"{name}/1" in state:
            return state[f"{name}/0"].double().numpy(), state[f"{name}/1"].double().numpy()
        return None

    if "keras_preprocessing" in metadata:
        for layer in json.loads(metadata["keras_preprocessing"]):
            if layer["kind"] == "Rescaling":
                rescale(layer["scale"], layer["offset"])
                continue
            values = stored(layer["name"]) if layer["mean"] is None else (layer["mean"], layer["variance"])
            if values is None:
                raise WeightsError(f"Keras Normalization layer '{layer['name']}' has no mean/variance in the file")
            if layer["invert"]:
                raise WeightsError("an inverted Keras Normalization layer before the stem is not supported")
            normalize(*values)
    else:
        layer_names = json.loads(metadata.get("keras_layers", "[]"))
        norm = next((stored(n) for n in layer_names if n.startswith("normalization")), None)
        if norm is not None:
            mean, variance = norm
            rescale(1 / 255.0, 0.0)
            normalize(mean, variance)
            if np.allclose(variance, IMAGENET_STD, atol=1e-6):
                rescale(1.0 / np.sqrt(variance), 0.0)
        elif plan.family == "efficientnetv2" and plan.name.startswith("efficientnetv2_b"):
            rescale(1 / 255.0, 0.0)
            normalize(IMAGENET_MEAN, np.square(IMAGENET_STD))
        elif plan.family == "efficientnetv2":
            rescale(1 / 128.0, -1.0)
        else:
            rescale(1 / 255.0, 0.0)
    scale, offset = np.broadcast_to(scale, 3), np.broadcast_to(offset, 3)
    std = 1.0 / (255.0 * scale)
    mean = -offset * std
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)  # type: ignore[return-value]


# -- source detection ---------------------------------------------------------------------
def detect_source(state: Mapping[str, torch.Tensor]) -> Source:
    keys = state.keys()
    if "_conv_stem.weight" in keys:
        return "lukemelas"
    if "conv_stem.weight" in keys:
        return "timm"
    if "features.0.0.weight" in keys:
        return "torchvision"
    if "stem_conv/0" in keys:
        return "keras"
    sample = ", ".join(list(keys)[:3])
    raise WeightsError(f"unrecognised checkpoint layout (first keys: {sample}); pass --from explicitly")


def classifier_rows(state: Mapping[str, torch.Tensor]) -> int | None:
    """Number of classes of a checkpoint's classifier, in whatever layout it is."""
    for key in ("classifier.weight", "_fc.weight", "classifier.1.weight"):
        if key in state:
            return int(state[key].shape[0])
    if "predictions/0" in state:
        return int(state["predictions/0"].shape[-1])
    return None


# -- key maps -----------------------------------------------------------------------------
def block_layers(block: BlockPlan) -> list[tuple[str, str] | str]:
    """A block's (conv, norm) pairs and its SE ("se"), in forward order.

    This is the order in which torchvision numbers a block's sub-layers and Keras names them,
    so both maps are read off it.
    """
    se: list[tuple[str, str] | str] = ["se"] if block.se_channels else []
    expands = block.mid_channels != block.in_channels
    if block.kind == "depthwise":
        return [("conv_dw", "bn1"), *se, ("conv_pw", "bn2")]
    if block.kind == "mbconv":
        head: list[tuple[str, str] | str] = [("conv_pw", "bn1")] if expands else []
        return [*head, ("conv_dw", "bn2"), *se, ("conv_pwl", "bn3")]
    if not expands:
        return [("conv", "bn1")]
    return [("conv_exp", "bn1"), *se, ("conv_pwl", "bn2")]


_LUKEMELAS_BLOCK = {
    # (our block kind, expands) -> {their name: our name}
    ("depthwise", False): {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"},
    ("mbconv", True): {
        "_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
        "_project_conv": "conv_pwl", "_bn2": "bn3",
    },
    ("mbconv", False): {"_depthwise_conv": "conv_dw", "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"},
}
_LUKEMELAS_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_LUKEMELAS_TOP = {
    "_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier",
}


def lukemelas_key_map(plan: NetworkPlan) -> dict[str, str]:
    """Their module prefixes (``_blocks.5._bn1``) -> ours (``blocks.2.1.bn2``)."""
    mapping = dict(_LUKEMELAS_TOP)
    for flat, block in enumerate(plan.blocks):
        layout = (block.kind, block.mid_channels != block.in_channels)
        if layout not in _LUKEMELAS_BLOCK:
            raise WeightsError(
                f"lukemelas checkpoints hold EfficientNet V1/Lite blocks, not {plan.name}'s {block.kind}"
            )
        for theirs, ours in (_LUKEMELAS_BLOCK[layout] | _LUKEMELAS_SE).items():
            mapping[f"_blocks.{flat}.{theirs}"] = f"blocks.{block.stage}.{block.index}.{ours}"
    return mapping


def torchvision_key_map(plan: NetworkPlan) -> dict[str, str]:
    """torchvision's ``features.<stage+1>.<i>.block.<k>.<0|1>`` -> ours.

    ``features.0`` is the stem, ``features.<stages+1>`` the head conv; in a block each
    conv+norm pair is one ``Conv2dNormActivation`` (``.0`` conv, ``.1`` norm) and SE is
    ``fc1``/``fc2``; ``classifier.1`` is the linear layer (``classifier.0`` is dropout).
    """
    mapping = {
        "features.0.0": "conv_stem", "features.0.1": "bn1",
        f"features.{plan.num_stages + 1}.0": "conv_head", f"features.{plan.num_stages + 1}.1": "bn2",
        "classifier.1": "classifier",
    }
    for block in plan.blocks:
        theirs, ours = f"features.{block.stage + 1}.{block.index}.block", f"blocks.{block.stage}.{block.index}"
        for k, layer in enumerate(block_layers(block)):
            if layer == "se":
                mapping[f"{theirs}.{k}.fc1"] = f"{ours}.se.conv_reduce"
                mapping[f"{theirs}.{k}.fc2"] = f"{ours}.se.conv_expand"
            else:
                mapping[f"{theirs}.{k}.0"] = f"{ours}.{layer[0]}"
                mapping[f"{theirs}.{k}.1"] = f"{ours}.{layer[1]}"
    return mapping


def keras_layer_map(plan: NetworkPlan) -> dict[str, str]:
    """keras.applications layer names (``block2a_expand_conv``) -> our module names.

    Keras names blocks ``block<stage+1><a, b, c...>_``; V1 calls the depthwise conv
    ``dwconv`` and V2 ``dwconv2`` (both map); a fused block without expansion is a single
    ``project_conv``.
    """
    mapping = {"stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head", "top_bn": "bn2",
               "predictions": "classifier"}
    for block in plan.blocks:
        theirs, ours = f"block{block.stage + 1}{chr(ord('a') + block.index)}_", f"blocks.{block.stage}.{block.index}"
        expands = block.mid_channels != block.in_channels
        names: dict[str, str] = {}
        if block.kind == "depthwise":
            names = {"dwconv": "conv_dw", "bn": "bn1", "project_conv": "conv_pw", "project_bn": "bn2"}
        elif block.kind == "mbconv":
            names = {"dwconv": "conv_dw", "dwconv2": "conv_dw", "bn": "bn2", "project_conv": "conv_pwl",
                     "project_bn": "bn3"}
            if expands:
                names |= {"expand_conv": "conv_pw", "expand_bn": "bn1"}
        elif expands:
            names = {"expand_conv": "conv_exp", "expand_bn": "bn1", "project_conv": "conv_pwl", "project_bn": "bn2"}
        else:
            names = {"project_conv": "conv", "project_bn": "bn1"}
        if block.se_channels:
            names |= {"se_reduce": "se.conv_reduce", "se_expand": "se.conv_expand"}
        mapping |= {theirs + k: f"{ours}.{v}" for k, v in names.items()}
    return mapping


def rename_by_prefix(state: Mapping[str, torch.Tensor], prefixes: Mapping[str, str]) -> StateDict:
    """Rename ``prefix.leaf`` keys through a module-prefix table; unknown keys are kept as-is
    so that the strict check reports them."""
    out: StateDict = {}
    for key, tensor in state.items():
        module, _, leaf = key.rpartition(".")
        out[f"{prefixes[module]}.{leaf}" if module in prefixes else key] = tensor
    return out


def from_lukemelas(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    return rename_by_prefix(state, lukemelas_key_map(plan))


def from_timm(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    """timm (and geffnet) use our names; their norm layers (``BatchNormAct2d``) subclass
    ``BatchNorm2d`` and keep its tensor names, so the keys already match."""
    return dict(state)


def from_torchvision(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    return rename_by_prefix(state, torchvision_key_map(plan))


_KERAS_BN = ("weight", "bias", "running_mean", "running_var")


def from_keras(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    """Keras layer variables -> our tensors, transposed to PyTorch's layouts.

    Preprocessing layers (Rescaling, Normalization) are consumed by
    ``keras_input_normalization``, not mapped to tensors.
    """
    names = keras_layer_map(plan)
    grouped: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in state.items():
        layer, _, index = key.rpartition("/")
        grouped.setdefault(layer, {})[int(index)] = tensor
    out: StateDict = {}
    for layer, variables in grouped.items():
        if _is_keras_preprocessing(layer):
            continue
        arrays = [variables[i] for i in sorted(variables)]
        ours = names.get(layer)
        if ours is None:
            out.update({f"{layer}/{i}": t for i, t in enumerate(arrays)})  # reported as unexpected
            continue
        leaf = ours.rsplit(".", 1)[-1]
        if leaf.startswith("bn"):
            out.update({f"{ours}.{n}": t for n, t in zip(_KERAS_BN, arrays)})
            out.update({f"{ours}.#{i}": t for i, t in enumerate(arrays[len(_KERAS_BN):], len(_KERAS_BN))})
            continue
        kernel, rest = arrays[0], arrays[1:]
        if leaf == "classifier":
            weight = kernel.t()
        elif leaf == "conv_dw":
            height, width, channels, multiplier = kernel.shape
            weight = kernel.permute(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        else:
            weight = kernel.permute(3, 2, 0, 1)
        out[f"{ours}.weight"] = weight
        if rest:
            out[f"{ours}.bias"] = rest[0]
        out.update({f"{ours}.#{i}": t for i, t in enumerate(rest[1:], 2)})
    return out


CONVERTERS: dict[str, Callable[[Mapping[str, torch.Tensor], NetworkPlan], StateDict]] = {
    "effnet": from_timm,
    "timm": from_timm,
    "lukemelas": from_lukemelas,
    "torchvision": from_torchvision,
    "keras": from_keras,
}


def convert_state_dict(state: Mapping[str, torch.Tensor], source: Source, plan: NetworkPlan) -> StateDict:
    if source not in CONVERTERS:
        raise WeightsError(f"no converter for source '{source}'; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[source](state, plan)


def fill_batch_counters(state: StateDict, expected: Mapping[str, torch.Tensor]) -> StateDict:
    """Add BatchNorm ``num_batches_tracked`` counters a checkpoint lacks (Keras, old torch
    files): they only matter with ``momentum=None`` and carry no learned information."""
    for key, tensor in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(tensor, device="cpu")
    return state


# -- strict loading -----------------------------------------------------------------------
def check_compatible(
    converted: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    arch: str,
    ignore: tuple[str, ...] = (),
) -> None:
    """Raise ``WeightsMismatchError`` unless keys and shapes match exactly (minus ``ignore``)."""

    def keep(key: str) -> bool:
        return not key.startswith(ignore) if ignore else True

    ours = {k for k in expected if keep(k)}
    theirs = {k for k in converted if keep(k)}
    missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
    shapes = [
        f"{k}: file {tuple(converted[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(ours & theirs)
        if tuple(converted[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {'; '.join(items[:3])}{more}")
    raise WeightsMismatchError(f"weights do not fit {arch}: " + " | ".join(parts))
