"""Looking weights up: by full name, by tag for a model, ``default``, or by a file's checksum.

The rows live in ``catalog.py``; this module only answers questions about them, so every
command picks weights by the same rules.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UnknownWeightsError, WeightsError, WrongArchitectureError
from ..models.variants import canonical_name
from .catalog import ENTRIES
from .entry import WeightsEntry, checksum_matches

DEFAULT_MODEL = "efficientnet_lite0"
CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar", ".h5", ".hdf5", ".keras", ".pdparams")
#: files the runtime engines run (named in errors only: the engines recognise their own)
EXPORTED_SUFFIXES = (".onnx", ".xml", ".tflite")


def looks_like_path(weights: object) -> bool:
    """Whether ``--weights`` names a file rather than an entry, tag or ``default`` (torch-free,
    so the compiled-engine cache can key a file without loading it)."""
    text = str(weights)
    return isinstance(weights, Path) or "/" in text or "\\" in text or text.lower().endswith((*CHECKPOINT_SUFFIXES, ".onnx"))


def _defaults() -> dict[str, str]:
    """What ``weights="default"`` means: the embedded weights where there are some, else the
    ImageNet-1k-only entry with the best reported top-1 (extra-data weights are opt-in).

    Only entries with a checksum qualify: a default is downloaded without the user naming it,
    so it must be verifiable. Entries without one (PaddleClas, mindcv) are used when named.
    """
    defaults = {
        "efficientnet_lite0": "efficientnet_lite0.tf_in1k",
        "efficientnet_lite1": "efficientnet_lite1.tf_in1k",
        "efficientnet_lite2": "efficientnet_lite2.tf_in1k",
    }
    best: dict[str, WeightsEntry] = {}
    for entry in ENTRIES.values():
        if entry.arch in defaults or entry.top1 is None or not entry.sha256:
            continue
        current = best.get(entry.arch)
        if current is None or (current.extra_training_data, -(current.top1 or 0)) > (
            entry.extra_training_data, -entry.top1
        ):
            best[entry.arch] = entry
    return defaults | {arch: entry.name for arch, entry in best.items()}


#: Which entry ``weights="default"`` means for an architecture.
DEFAULTS: dict[str, str] = _defaults()


def list_weights(arch: str | None = None) -> list[WeightsEntry]:
    arch = canonical_name(arch) if arch else None
    return [e for e in ENTRIES.values() if arch is None or e.arch == arch]


def get_weights(name: str, arch: str | None = None) -> WeightsEntry:
    """An entry by full name (``efficientnet_lite0.tf_in1k``), by tag for ``arch``, or ``default``."""
    if arch is not None:
        arch = canonical_name(arch)
        if name.lower() in ("default", "pretrained", "true"):
            if arch not in DEFAULTS:
                raise WeightsError(f"no default weights for {arch}; entries: {_entry_names(arch)}")
            return ENTRIES[DEFAULTS[arch]]
        if f"{arch}.{name}" in ENTRIES:
            return ENTRIES[f"{arch}.{name}"]
    if name in ENTRIES:
        entry = ENTRIES[name]
        if arch is not None and entry.arch != arch:
            raise WrongArchitectureError(f"weights '{name}' are for {entry.arch}, not {arch}")
        return entry
    if Path(name).is_file():  # a file whose suffix no loader takes (a photo or a note in the wrong place)
        raise UnknownWeightsError(f"{name}: not a weights file effnet reads ({', '.join(CHECKPOINT_SUFFIXES)}, "
                                  f"or {', '.join(EXPORTED_SUFFIXES)} from `effnet export`/`quantize`)")
    raise UnknownWeightsError(f"unknown weights '{name}'; known entries: {_entry_names(arch)}")


def arch_for(weights: object) -> str | None:
    """The architecture a weights name itself names: a full entry name
    (``efficientnet_lite1.tf_in1k``) or an entry; None for a tag, ``default`` or a file, which
    need a model (or, for a file, its own metadata) to say which."""
    if isinstance(weights, WeightsEntry):
        return weights.arch
    entry = ENTRIES.get(weights) if isinstance(weights, str) else None
    return entry.arch if entry else None


def _entry_names(arch: str | None) -> str:
    names = [e.name for e in list_weights(arch)]
    return ", ".join(names) if names else "(none registered for this model)"


def template_for(arch: str, source: str) -> WeightsEntry | None:
    """The registered entry a local file of ``source`` format most likely came from: its
    default entry if that is of this source, else the first one of this source."""
    candidates = [e for e in list_weights(arch) if e.source == source]
    default = DEFAULTS.get(canonical_name(arch))
    for entry in candidates:
        if entry.name == default:
            return entry
    return candidates[0] if candidates else None


def entry_by_checksum(sha256: str, arch: str | None = None) -> WeightsEntry | None:
    """The registered entry whose checksum (full or published prefix) this file has."""
    for entry in ENTRIES.values():
        if entry.sha256 and checksum_matches(sha256, entry.sha256) and (arch is None or entry.arch == arch):
            return entry
    return None


def reported_entry(arch: str) -> WeightsEntry | None:
    """The weights whose reported accuracy describes ``arch``: its default, else the best one."""
    entries = [e for e in list_weights(arch) if e.top1 is not None]
    default = [e for e in entries if DEFAULTS.get(arch) == e.name]
    if default:
        return default[0]
    return max(entries, key=lambda e: e.top1 or 0.0, default=None)
