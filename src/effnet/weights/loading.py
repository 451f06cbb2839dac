"""``create_model``: build a variant and load weights from a registry entry or any file.

A file brings its own metadata when it is one of ours (safetensors written by
``effnet convert``); otherwise its layout says where it came from and the registry's entry
for that architecture and source supplies padding, BN epsilon and preprocessing.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..data.transforms import Preprocessing
from ..models.spec import Padding
from ..models.network import EfficientNet, build_model
from ..models.variants import canonical_name
from .convert import (
    check_compatible,
    classifier_rows,
    convert_state_dict,
    detect_source,
    fill_batch_counters,
    keras_input_normalization,
    read_checkpoint,
)
from .registry import (
    DEFAULT_MODEL,
    Source,
    WeightsEntry,
    WeightsError,
    entry_by_checksum,
    get_weights,
    sha256_of,
    template_for,
    verify_checksum,
)

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar", ".h5", ".hdf5", ".keras")

#: What a bare file of each source was trained with, when no registry entry says better.
#: (torchvision builds B0-B4 with eps 1e-5 and B5-B7/V2 with 1e-3; its entries say which.)
SOURCE_DEFAULTS: dict[str, dict[str, Any]] = {
    "lukemelas": {"padding": Padding.TF_SAME, "bn_eps": 1e-3},
    "timm": {"padding": Padding.SYMMETRIC, "bn_eps": 1e-5},
    "effnet": {"padding": Padding.SYMMETRIC, "bn_eps": 1e-5},
    "torchvision": {"padding": Padding.SYMMETRIC, "bn_eps": 1e-3},
    "keras": {"padding": Padding.TF_SAME, "bn_eps": 1e-3},
}


def looks_like_path(weights: str | Path) -> bool:
    text = str(weights)
    return isinstance(weights, Path) or "/" in text or "\\" in text or text.lower().endswith((*CHECKPOINT_SUFFIXES, ".onnx"))


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


def entry_from_metadata(metadata: dict[str, str], path: Path) -> WeightsEntry | None:
    """Rebuild the entry that ``metadata_from_entry`` stored in a safetensors header."""
    if "arch" not in metadata:
        return None

    def load(key: str, default: Any = None) -> Any:
        value = metadata.get(key)
        if value is None:
            return default
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value

    labels = load("labels", "imagenet1k")
    shape = load("shape")  # width/depth multipliers of a custom-shaped trained model
    return WeightsEntry(
        name=str(load("name", f"{metadata['arch']}.file")),
        arch=canonical_name(metadata["arch"]),
        source="effnet",
        file=str(path),
        padding=Padding(load("padding", "symmetric")),
        bn_eps=float(load("bn_eps", 1e-5)),
        preprocessing=Preprocessing.from_dict(load("preprocessing", {})),
        labels=tuple(labels) if isinstance(labels, list) else labels,
        num_classes=int(load("num_classes", 1000)),
        top1=load("top1"),
        top5=load("top5"),
        reported_by=str(load("reported_by", "")),
        extra={"shape": shape} if shape else {},
    )


def entry_for_file(path: Path, arch: str | None, state: dict[str, torch.Tensor], metadata: dict[str, str],
                   source: Source | None = None) -> WeightsEntry:
    """The entry describing a local checkpoint: its own metadata; else the registry entry
    with its checksum; else the registry template for its source; else source defaults."""
    stored = entry_from_metadata(metadata, path)
    if stored is not None:
        if arch is not None and stored.arch != arch:
            raise WeightsError(f"{path}: weights are for {stored.arch}, not {arch}")
        return stored
    if arch is None:
        raise WeightsError(f"{path}: the file does not name its architecture; pass --model")
    source = source or detect_source(state)
    if source == "keras":
        return keras_entry(path, arch, state, metadata)
    known = entry_by_checksum(sha256_of(path), arch)
    if known is not None and known.source == source:
        return replace(known, file=str(path), url=None)
    template = template_for(arch, source)
    num_classes = classifier_rows(state) or 1000
    if template is not None and template.num_classes == num_classes:
        # Same layout as a registered checkpoint but not that file: take its settings, not its accuracy.
        return replace(template, name=f"{arch}.file", file=str(path), sha256=None, url=None, top1=None, top5=None,
                       reported_by="", extra={"settings_from": template.name})
    defaults = SOURCE_DEFAULTS.get(source, SOURCE_DEFAULTS["timm"])
    from ..models.spec import resolve

    size = resolve(arch).eval_resolution
    return WeightsEntry(
        name=f"{arch}.file", arch=arch, source=source, file=str(path),
        preprocessing=Preprocessing(size=size), num_classes=num_classes,
        labels="imagenet1k" if num_classes == 1000 else (), **defaults,
    )


def keras_entry(path: Path, arch: str, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> WeightsEntry:
    """A keras.applications-style file: TF "same" padding, Keras's BatchNorm eps (1e-3), the
    normalization its own layers apply, and TF's EfficientNet eval crop (S / (S + 32), bicubic)."""
    from ..models.spec import resolve

    num_classes = classifier_rows(state) or 1000
    plan = resolve(arch, num_classes=num_classes)
    mean, std = keras_input_normalization(state, metadata, plan)
    size = plan.eval_resolution
    return WeightsEntry(
        name=f"{arch}.keras", arch=arch, source="keras", file=str(path),
        preprocessing=Preprocessing(size=size, crop_fraction=size / (size + 32), crop_mode="center_crop_then_resize",
                                    interpolation="bicubic", mean=mean, std=std),
        num_classes=num_classes, labels="imagenet1k" if num_classes == 1000 else (),
        **SOURCE_DEFAULTS["keras"],
    )


def resolve_entry(weights: str | Path | WeightsEntry, arch: str | None) -> WeightsEntry:
    """A registry entry (by name/tag/``default``) or the entry for a local file."""
    if isinstance(weights, WeightsEntry):
        return weights
    if looks_like_path(weights):
        path = Path(weights).expanduser()
        state, metadata = read_checkpoint(path)
        return entry_for_file(path, arch, state, metadata)
    return get_weights(str(weights), arch)


def entry_path(entry: WeightsEntry, *, progress: bool = True) -> Path:
    """The entry's file on this machine, downloading URL entries into the cache first."""
    path = entry.locate()
    if path is not None and path.is_file():
        return path
    if entry.url:
        from .download import fetch

        return fetch(entry, progress=progress)
    raise WeightsError(
        f"weights '{entry.name}' are not available on this machine ({entry.file}); "
        "pass a checkpoint file with --weights FILE"
    )


def load_entry_state(entry: WeightsEntry) -> dict[str, torch.Tensor]:
    """Tensors of an entry, checksum-verified when the entry has one."""
    path = entry_path(entry)
    verify_checksum(path, entry.sha256)
    state, _ = read_checkpoint(path)
    return state


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Pretrained RGB stem filters for ``in_chans`` inputs instead of a random stem.

    1 channel: the sum of the RGB filters (a grey image x gives the same response as RGB
    (x, x, x)). C channels: the RGB filters repeated and scaled by 3/C so activations keep
    their magnitude.
    """
    if in_chans == weight.shape[1]:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (weight.shape[1] / in_chans)


def create_model(
    name: str = DEFAULT_MODEL,
    weights: str | Path | WeightsEntry | None = None,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    **kwargs: Any,
) -> EfficientNet:
    """Build ``name`` and optionally load ``weights`` (entry name, tag, ``"default"`` or a file).

    A ``num_classes`` different from the weights' drops the pretrained classifier and
    creates a new one; ``in_chans`` other than 3 adapts the pretrained stem. Extra keywords
    (``drop_rate``, ``drop_path_rate``, ``global_pool``, ``features_only``, ``width_mult`` ...)
    go to the builder.
    """
    arch = canonical_name(name)
    if weights is None:
        return build_model(arch, num_classes=1000 if num_classes is None else num_classes, in_chans=in_chans, **kwargs)
    if not isinstance(weights, WeightsEntry) and looks_like_path(weights):
        path = Path(weights).expanduser()
        raw, metadata = read_checkpoint(path)  # read once: entry and tensors come from the same file
        entry = entry_for_file(path, arch, raw, metadata)
    else:
        entry = resolve_entry(weights, arch)
        raw = load_entry_state(entry)
    state = convert_state_dict(raw, entry.source, build_plan(entry))
    if "conv_stem.weight" in state:
        state["conv_stem.weight"] = adapt_input_conv(state["conv_stem.weight"], in_chans)
    new_head = num_classes is not None and num_classes != entry.num_classes
    dropped = ("conv_head.", "bn2.", "classifier.") if kwargs.get("features_only") else ("classifier.",)
    if new_head or kwargs.get("features_only"):
        state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    options = {"padding": entry.padding, "bn_eps": entry.bn_eps} | entry.extra.get("shape", {}) | kwargs
    model = build_model(
        arch, num_classes=num_classes if new_head else entry.num_classes, in_chans=in_chans, **options
    )
    expected = model.state_dict()
    fill_batch_counters(state, expected)
    check_compatible(state, expected, arch, ignore=("classifier.",) if new_head else ())
    model.load_state_dict(state, strict=not new_head)
    model.pretrained_cfg = entry
    return model


def build_plan(entry: WeightsEntry):  # noqa: ANN201 - NetworkPlan
    """The plan the entry's tensors were made for (used by converters to place blocks)."""
    from ..models.spec import resolve

    return resolve(entry.arch, num_classes=entry.num_classes, **entry.extra.get("shape", {}))
