"""Weights sources, one module per ecosystem, in one registry: ``SOURCES = {name: Source}``.

A ``Source`` says how to recognise its checkpoints (tensor names only it has), how to map
them to ours (a converter that reads the block anatomy off the network plan), where its
classifier is, and what padding and BatchNorm epsilon a bare file of it was trained with.
Detection, class counting, conversion and ``effnet convert --from`` all read this registry;
adding a source is one module plus one line below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from ...errors import WeightsError
from . import effnet, keras, lukemelas, mindspore, paddle, timm, torchvision
from .base import Source, StateDict

if TYPE_CHECKING:
    import torch

    from ...models.spec import NetworkPlan

SOURCES: dict[str, Source] = {source.name: source for source in (
    effnet.SOURCE, lukemelas.SOURCE, timm.SOURCE, torchvision.SOURCE, keras.SOURCE, paddle.SOURCE, mindspore.SOURCE,
)}


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise WeightsError(f"no converter for source '{name}'; known: {', '.join(SOURCES)}")
    return SOURCES[name]


def find_source(state: Mapping[str, object]) -> Source | None:
    """The source whose tensor names ``state`` has, or None when no layout matches."""
    return next((source for source in SOURCES.values() if source.detects(state)), None)


def detect_source(state: Mapping[str, object]) -> str:
    source = find_source(state)
    if source is None:
        sample = ", ".join(list(state)[:3])
        raise WeightsError(f"unrecognised checkpoint layout (first keys: {sample}); pass --from explicitly")
    return source.name


def classifier_rows(state: Mapping[str, torch.Tensor], source: str | None = None) -> int | None:
    """Number of classes of a checkpoint's classifier: in ``source``'s layout, else in the
    layout its tensor names show first (PaddleClas's ``_fc.weight`` is lukemelas's name with
    the axes swapped), then in whichever layout has one."""
    if source:
        candidates = [get_source(source)]
    else:
        detected = find_source(state)
        candidates = sorted(SOURCES.values(), key=lambda s: s is not detected)
    return next((rows for rows in (s.classifier_rows(state) for s in candidates) if rows is not None), None)


def convert_state_dict(state: Mapping[str, torch.Tensor], source: str, plan: NetworkPlan) -> StateDict:
    """``state`` in ``source``'s layout -> our names and tensor layouts (not yet checked)."""
    return get_source(source).convert(state, plan)
