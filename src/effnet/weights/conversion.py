"""A checkpoint from any source -> our tensors, strictly, and the entry that describes it.

Each source maps its names through its own module (``sources/``), driven by the network
plan's block anatomy, never by regexes over names. Import is strict: every source tensor
must be used and every parameter and buffer of ours filled with a tensor of the same shape,
or a ``WeightsMismatchError`` says exactly which keys and shapes differ.

A file describes itself when it is one of ours (its safetensors header); otherwise the
registry entry with its checksum, else the registry's usual entry for its source and model,
else its source's defaults say which padding, BatchNorm epsilon and preprocessing it needs
(a guess, marked ``extra["defaults_of"]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import WeightsError, WeightsMismatchError, WrongArchitectureError
from ..models.variants import list_models, resolve
from .entry import WeightsEntry, sha256_of
from .io import entry_from_metadata, metadata_from_entry, read_checkpoint, write_safetensors
from .registry import entry_by_checksum, get_weights, template_for
from .sources import StateDict, classifier_rows, convert_state_dict, detect_source, find_source, get_source


#: a model's tensors, or only their shapes (``NetworkPlan.tensor_shapes()``, known before building)
Expected = Mapping[str, "torch.Tensor | tuple[int, ...]"]


def _shape(value: torch.Tensor | tuple[int, ...]) -> tuple[int, ...]:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else tuple(value)


def fill_batch_counters(state: StateDict, expected: Expected) -> StateDict:
    """Add BatchNorm ``num_batches_tracked`` counters a checkpoint lacks (Keras, old torch
    files): they only matter with ``momentum=None`` and carry no learned information."""
    for key, value in expected.items():
        if key.endswith(".num_batches_tracked") and key not in state:
            state[key] = torch.zeros(_shape(value), dtype=torch.long)
    return state


def check_compatible(converted: Mapping[str, torch.Tensor], expected: Expected, arch: str,
                     ignore: tuple[str, ...] = ()) -> None:
    """Raise ``WeightsMismatchError`` unless keys and shapes match exactly (minus ``ignore``)."""

    def keep(key: str) -> bool:
        return not key.startswith(ignore) if ignore else True

    ours = {k for k in expected if keep(k)}
    theirs = {k for k in converted if keep(k)}
    missing, unexpected = sorted(ours - theirs), sorted(theirs - ours)
    shapes = [
        f"{k}: file {tuple(converted[k].shape)} vs model {_shape(expected[k])}"
        for k in sorted(ours & theirs)
        if tuple(converted[k].shape) != _shape(expected[k])
    ]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {'; '.join(items[:3])}{more}")
    raise WeightsMismatchError(f"weights do not fit {arch}: " + " | ".join(parts))


def check_fits(converted: Mapping[str, torch.Tensor], expected: Expected, arch: str, *,
               raw: Mapping[str, torch.Tensor], source: str, what: str, ignore: tuple[str, ...] = ()) -> None:
    """``check_compatible``; tensors that are exactly another variant's say whose they are,
    as a usage error: ``--model lite1`` with Lite0's file is the same mistake however the file
    arrives (a header or an ONNX graph that names its model says so too). Several variants
    may hold the same tensors (Lite0 and B0-small differ only in activation): all are named."""
    try:
        check_compatible(converted, expected, arch, ignore)
    except WeightsMismatchError:
        others = variants_of(raw, source)
        if others and arch not in others:
            raise WrongArchitectureError(f"{what}: weights are for {' or '.join(others)}, not {arch}") from None
        raise


def variants_of(state: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """The variants whose tensors (all of them, shapes included) ``state`` holds."""
    num_classes = classifier_rows(state, source) or 0
    found = []
    for name in list_models():
        plan = resolve(name, num_classes=num_classes)
        try:
            converted = convert_state_dict(state, source, plan)
        except WeightsError:  # a layout that cannot hold this variant (lukemelas and V2)
            continue
        needed = {k: v for k, v in plan.tensor_shapes().items() if not k.endswith("num_batches_tracked")}
        if {k: tuple(v.shape) for k, v in converted.items() if not k.endswith("num_batches_tracked")} == needed:
            found.append(name)
    return found


# -- describing a local file ------------------------------------------------------------------
def entry_for_file(path: Path, arch: str | None, state: Mapping[str, torch.Tensor], metadata: Mapping[str, str],
                   source: str | None = None) -> WeightsEntry:
    """The entry describing a local checkpoint: its own metadata; else the registry entry
    with its checksum; else the registry template for its source; else source defaults."""
    stored = entry_from_metadata(metadata, path)
    if stored is not None:
        if arch is not None and stored.arch != arch:
            raise WrongArchitectureError(f"{path}: weights are for {stored.arch}, not {arch}")
        rows = classifier_rows(state, stored.source)
        if rows is not None and rows != stored.num_classes:
            raise WeightsError(f"{path}: the header says {stored.num_classes} classes but the classifier has {rows}")
        return stored
    if arch is None:
        raise WeightsError(f"{path}: the file does not name its architecture; pass --model")
    layout = get_source(source or detect_source(state))
    if layout.describe_file is not None:
        return layout.describe_file(path, arch, state, metadata)
    known = entry_by_checksum(sha256_of(path), arch)
    if known is not None and known.source == layout.name:
        return replace(known, file=str(path), url=None)
    template = template_for(arch, layout.name)
    num_classes = layout.classifier_rows(state) or 1000
    if template is not None and template.num_classes == num_classes:
        # Same layout as a registered checkpoint but not that file: take its settings, not its accuracy.
        return replace(template, name=f"{arch}.file", file=str(path), sha256=None, url=None, top1=None, top5=None,
                       reported_by="", extra={"settings_from": template.name})
    settings = layout.bare_settings(resolve(arch, num_classes=num_classes))
    return WeightsEntry(
        name=f"{arch}.file", arch=arch, source=layout.name, file=str(path), preprocessing=settings.preprocessing,
        num_classes=num_classes, labels="imagenet1k" if num_classes == 1000 else (), padding=settings.padding,
        bn_eps=settings.bn_eps, extra={"defaults_of": layout.name},  # a guess: callers tell the user how to say better
    )


# -- effnet convert ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversion:
    """Tensors under our names, strictly checked, with the entry that describes them."""

    state: StateDict
    entry: WeightsEntry
    source: str
    num_params: int

    @property
    def guessed(self) -> bool:
        """No entry describes the file: padding, eps and preprocessing are its source's defaults."""
        return "defaults_of" in self.entry.extra

    def write(self, path: Path) -> None:
        """A safetensors file whose header carries the entry, and where it was converted from."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_safetensors(self.state, path, metadata_from_entry(
            self.entry, source=self.source, converted_from=Path(self.entry.file or "").name,
            settings_from=self.entry.extra.get("settings_from", self.entry.name)))


def convert_file(
    src: Path,
    arch: str,
    *,
    source: str | None = None,
    entry_name: str | None = None,
    labels: tuple[str, ...] | None = None,
) -> Conversion:
    """Read, map and strictly check ``src``: what ``effnet convert`` writes.

    ``source`` must agree with the layout the tensor names show (when they show one);
    ``entry_name`` picks the registry entry whose settings describe the file; ``labels``
    names a classifier that is not ImageNet-1k's.
    """
    state, metadata = read_checkpoint(src)
    detected = find_source(state)
    if source is not None and detected is not None and detected.name != source:
        raise WeightsError(f"{src} has {detected.name}'s tensor names, not {source}'s; use --from {detected.name} "
                           "(or leave --from out: the layout is detected)")
    source = source or detect_source(state)
    entry = entry_for_file(src, arch, state, metadata, source)
    if entry_name is not None:
        chosen = get_weights(entry_name, arch)
        entry = replace(chosen, file=str(src), url=None, sha256=None)
    num_classes = classifier_rows(state, source) or entry.num_classes
    if labels is not None and len(labels) != num_classes:
        raise WeightsError(f"--class-names has {len(labels)} names but the classifier has {num_classes} classes")
    entry = replace(entry, num_classes=num_classes,
                    labels=labels or ("imagenet1k" if num_classes == 1000 else entry.labels))
    plan = resolve(arch, num_classes=num_classes, **entry.extra.get("shape", {}))
    converted = convert_state_dict(state, source, plan)
    fill_batch_counters(converted, plan.tensor_shapes())
    check_fits(converted, plan.tensor_shapes(), arch, raw=state, source=source, what=str(src))
    converted = {k: v.float() if v.is_floating_point() else v for k, v in converted.items()}
    return Conversion(converted, entry, source, plan.num_params())
