"""``create_model``: build a variant and load weights from a registry entry or any file.

A file brings its own metadata when it is one of ours (safetensors written by
``effnet convert``); otherwise its layout says where it came from and the registry's entry
for that architecture and source supplies padding, BN epsilon and preprocessing
(``conversion.entry_for_file``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError, WrongArchitectureError
from ..models.network import EfficientNet, build_model
from ..models.variants import canonical_name, resolve
from .conversion import check_fits, entry_for_file, fill_batch_counters
from .download import fetch
from .entry import WeightsEntry, verify_checksum
from .io import read_checkpoint
from .registry import DEFAULT_MODEL, arch_for, get_weights, looks_like_path
from .sources import convert_state_dict

def resolve_entry(weights: str | Path | WeightsEntry, arch: str | None) -> WeightsEntry:
    """A registry entry (by name/tag/``default``) or the entry for a local file.

    Without ``arch``, a full entry name or a file of ours names its own architecture; a tag
    or ``default`` means ``DEFAULT_MODEL``'s.
    """
    if isinstance(weights, WeightsEntry):
        if arch is not None and weights.arch != canonical_name(arch):
            raise WrongArchitectureError(f"weights '{weights.name}' are for {weights.arch}, not {canonical_name(arch)}")
        return weights
    if looks_like_path(weights):
        path = Path(weights).expanduser()
        state, metadata = read_checkpoint(path)
        return entry_for_file(path, arch, state, metadata)
    return get_weights(str(weights), arch or arch_for(str(weights)) or DEFAULT_MODEL)


def entry_path(entry: WeightsEntry, *, progress: bool = True) -> Path:
    """The entry's file on this machine, downloading URL entries into the cache first."""
    path = entry.locate()
    if path is not None and path.is_file():
        return path
    if entry.url:
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
    name: str | None = None,
    weights: str | Path | WeightsEntry | None = None,
    *,
    num_classes: int | None = None,
    in_chans: int = 3,
    **kwargs: Any,
) -> EfficientNet:
    """Build ``name`` and optionally load ``weights`` (entry name, tag, ``"default"`` or a file).

    Without ``name`` the weights say which architecture they fit (a full entry name, an
    entry, or a file of ours); otherwise, and without weights, it is ``DEFAULT_MODEL``.
    A ``num_classes`` different from the weights' drops the pretrained classifier and
    creates a new one; ``in_chans`` other than 3 adapts the pretrained stem. Extra keywords
    (``drop_rate``, ``drop_path_rate``, ``global_pool``, ``features_only``, ``width_mult`` ...)
    go to the builder.
    """
    arch = canonical_name(name) if name else None
    if weights is None:
        return build_model(arch or DEFAULT_MODEL, num_classes=1000 if num_classes is None else num_classes,
                           in_chans=in_chans, **kwargs)
    if not isinstance(weights, WeightsEntry) and looks_like_path(weights):
        path = Path(weights).expanduser()
        raw, metadata = read_checkpoint(path)  # read once: entry and tensors come from the same file
        entry = entry_for_file(path, arch, raw, metadata)
    else:
        entry = resolve_entry(weights, arch)
        raw = load_entry_state(entry)
    arch = entry.arch
    new_head = num_classes is not None and num_classes != entry.num_classes
    options = {"padding": entry.padding, "bn_eps": entry.bn_eps} | entry.extra.get("shape", {}) | kwargs
    head = num_classes if new_head else entry.num_classes
    # Checked against the plan before anything is built: a file that does not fit (or a
    # crafted header claiming a huge width) costs no memory. The same plan places the blocks
    # of the file's layout, so a custom width or depth is converted for what it is.
    plan = resolve(arch, num_classes=head, in_chans=in_chans,
                   **{key: options[key] for key in ("width_mult", "depth_mult") if key in options})
    state = convert_state_dict(raw, entry.source, plan)
    if "conv_stem.weight" in state:
        state["conv_stem.weight"] = adapt_input_conv(state["conv_stem.weight"], in_chans)
    features_only = bool(kwargs.get("features_only"))
    dropped = ("conv_head.", "bn2.", "classifier.") if features_only else ("classifier.",)
    if new_head or features_only:
        state = {k: v for k, v in state.items() if not k.startswith(dropped)}
    expected = {k: v for k, v in plan.tensor_shapes().items() if not (features_only and k.startswith(dropped))}
    fill_batch_counters(state, expected)
    check_fits(state, expected, arch, ignore=("classifier.",) if new_head else (), raw=raw, source=entry.source,
               what=entry.file or entry.name)
    model = build_model(arch, num_classes=head, in_chans=in_chans, **options)
    model.load_state_dict(state, strict=not new_head)
    model.pretrained_cfg = entry
    return model
