"""Checkpoints from other ecosystems -> our state dict, strictly; safe file I/O.

Our attribute names are timm's, so timm checkpoints load as they are; every other source
maps through one function here. Import is strict: every source tensor must be used and
every parameter and buffer of ours filled with a tensor of the same shape, or a
``WeightsMismatchError`` says exactly which keys and shapes differ.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..models.spec import NetworkPlan
from .registry import Source, WeightsError

StateDict = dict[str, torch.Tensor]


class WeightsMismatchError(WeightsError):
    """Tensors that do not fit the architecture: the message lists the differences."""


# -- reading files safely -----------------------------------------------------------------
def read_checkpoint(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Tensors and string metadata from ``.safetensors`` or a torch file, never unpickling code.

    Torch files are opened with ``weights_only=True``; common wrappers
    (``{"state_dict": ...}``, ``{"model": ...}``, ``{"state_dict_ema": ...}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: weights file is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
                return {k: handle.get_tensor(k) for k in handle.keys()}, metadata
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"{path}: corrupt or truncated safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(
            f"{path}: refusing to load: not a plain tensor checkpoint ({first[:160]})"
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

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp), metadata=encoded)
    tmp.replace(path)


# -- source detection ---------------------------------------------------------------------
def detect_source(state: Mapping[str, torch.Tensor]) -> Source:
    keys = state.keys()
    if "_conv_stem.weight" in keys:
        return "lukemelas"
    if "conv_stem.weight" in keys:
        return "timm"
    if "features.0.0.weight" in keys:
        return "torchvision"
    sample = ", ".join(list(keys)[:3])
    raise WeightsError(f"unrecognised checkpoint layout (first keys: {sample}); pass --from explicitly")


# -- key maps -----------------------------------------------------------------------------
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
_LUKEMELAS_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def lukemelas_key_map(plan: NetworkPlan) -> dict[str, str]:
    """Their module prefixes (``_blocks.5._bn1``) -> ours (``blocks.2.1.bn2``)."""
    mapping = dict(_LUKEMELAS_TOP)
    for flat, block in enumerate(plan.blocks):
        names = _LUKEMELAS_BLOCK[(block.kind, block.mid_channels != block.in_channels)] | _LUKEMELAS_SE
        for theirs, ours in names.items():
            mapping[f"_blocks.{flat}.{theirs}"] = f"blocks.{block.stage}.{block.index}.{ours}"
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
    return dict(state)


CONVERTERS: dict[str, Callable[[Mapping[str, torch.Tensor], NetworkPlan], StateDict]] = {
    "effnet": from_timm,
    "timm": from_timm,
    "lukemelas": from_lukemelas,
}


def convert_state_dict(state: Mapping[str, torch.Tensor], source: Source, plan: NetworkPlan) -> StateDict:
    if source not in CONVERTERS:
        raise WeightsError(f"no converter for source '{source}'; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[source](state, plan)


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
