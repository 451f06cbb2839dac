"""keras.applications EfficientNet/EfficientNetV2 (``.keras``, ``.h5``; read by ``io.read_keras``).

Tensors arrive as ``<layer name>/<index>`` (the layer's variables in Keras order) and are
transposed here: conv kernels HWIO -> OIHW, depthwise HWC1 -> C1HW, dense (in, out) ->
(out, in). Keras names blocks ``block<stage+1><a, b, c...>_`` and layers by role. Keras puts
its input normalization inside the model; ``keras_input_normalization`` turns those layers
into the mean/std our preprocessing applies, so a Keras file describes itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...data.transforms import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from ...errors import WeightsError
from ...models.spec import ConvLayer, NetworkPlan, Padding
from ...models.variants import resolve
from ..entry import WeightsEntry
from .base import Source, StateDict

if TYPE_CHECKING:
    import torch

#: role -> (their conv names, their norm); V1 calls the depthwise conv ``dwconv``, V2 ``dwconv2``
ROLES = {
    "expand": (("expand_conv",), "expand_bn"),
    "depthwise": (("dwconv", "dwconv2"), "bn"),
    "project": (("project_conv",), "project_bn"),
}
TOP = {"stem_conv": "conv_stem", "stem_bn": "bn1", "top_conv": "conv_head", "top_bn": "bn2",
       "predictions": "classifier"}
_BATCH_NORM = ("weight", "bias", "running_mean", "running_var")


def key_map(plan: NetworkPlan) -> dict[str, str]:
    """keras.applications layer names (``block2a_expand_conv``) -> our module names."""
    mapping = dict(TOP)
    for block in plan.blocks:
        theirs, ours = f"block{block.stage + 1}{chr(ord('a') + block.index)}_", f"blocks.{block.stage}.{block.index}"
        for layer in block.layers():
            if isinstance(layer, ConvLayer):
                convs, norm = ROLES[layer.role]
                mapping |= {theirs + conv: f"{ours}.{layer.conv}" for conv in convs}
                mapping[theirs + norm] = f"{ours}.{layer.norm}"
            else:
                mapping[theirs + "se_reduce"] = f"{ours}.{layer.name}.conv_reduce"
                mapping[theirs + "se_expand"] = f"{ours}.{layer.name}.conv_expand"
    return mapping


def _is_preprocessing(layer: str) -> bool:
    return layer.startswith(("normalization", "rescaling"))


def from_keras(state: Mapping[str, torch.Tensor], plan: NetworkPlan) -> StateDict:
    """Keras layer variables -> our tensors, transposed to PyTorch's layouts.

    Preprocessing layers (Rescaling, Normalization) are consumed by
    ``keras_input_normalization``, not mapped to tensors.
    """
    names = key_map(plan)
    grouped: dict[str, dict[int, torch.Tensor]] = {}
    for key, tensor in state.items():
        layer, _, index = key.rpartition("/")
        grouped.setdefault(layer, {})[int(index)] = tensor
    out: StateDict = {}
    for layer, variables in grouped.items():
        if _is_preprocessing(layer):
            continue
        arrays = [variables[i] for i in sorted(variables)]
        ours = names.get(layer)
        if ours is None:
            out.update({f"{layer}/{i}": t for i, t in enumerate(arrays)})  # reported as unexpected
            continue
        leaf = ours.rsplit(".", 1)[-1]
        if leaf.startswith("bn"):
            out.update({f"{ours}.{n}": t for n, t in zip(_BATCH_NORM, arrays)})
            out.update({f"{ours}.#{i}": t for i, t in enumerate(arrays[len(_BATCH_NORM):], len(_BATCH_NORM))})
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


def describe_keras_file(path: Path, arch: str, state: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str]) -> WeightsEntry:
    """A keras.applications-style file: TF "same" padding, Keras's BatchNorm eps (1e-3), the
    normalization its own layers apply, and TF's EfficientNet eval crop (S / (S + 32), bicubic)."""
    num_classes = SOURCE.classifier_rows(state) or 1000
    plan = resolve(arch, num_classes=num_classes)
    mean, std = keras_input_normalization(state, metadata, plan)
    size = plan.eval_resolution
    return WeightsEntry(
        name=f"{arch}.keras", arch=arch, source=SOURCE.name, file=str(path),
        preprocessing=Preprocessing(size=size, crop_fraction=size / (size + 32), crop_mode="center_crop_then_resize",
                                    interpolation="bicubic", mean=mean, std=std),
        num_classes=num_classes, labels="imagenet1k" if num_classes == 1000 else (),
        padding=SOURCE.padding, bn_eps=SOURCE.bn_eps,
    )


SOURCE = Source("keras", markers=("stem_conv/0",), classifier="predictions/0", classifier_axis=-1,
                convert=from_keras, padding=Padding.TF_SAME, bn_eps=1e-3, describe_file=describe_keras_file)
