"""What an exported classifier file says about itself, read the same way by every engine
that runs one (onnxruntime, OpenVINO).

An effnet file carries its architecture, preprocessing and labels as metadata
(``onnx_metadata``); a file effnet did not write gets a guessed recipe and a warning naming
the guess. Command-line preprocessing overrides are checked here once, so ``--size`` means
the same thing whichever engine runs the file. Pure Python and numpy: no engine is imported.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.labels import resolve_labels
from ..data.transforms import Preprocessing
from ..errors import UsageError
from .base import FileEngine
from .onnx_metadata import INPUT_FLOAT


class GuessedPreprocessingWarning(UserWarning):
    """An exported file without effnet metadata runs with guessed preprocessing and labels."""


@dataclass(frozen=True)
class PassThrough(Preprocessing):
    """Preprocessing for graphs that do it themselves: decoded images go in unchanged.

    The fields still describe the recipe the graph applies (for reports and metadata).
    """

    def resize_crop(self, image: np.ndarray) -> np.ndarray:
        return image

    def normalize(self, image: np.ndarray) -> np.ndarray:
        return image

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


@dataclass(frozen=True)
class FileFacts:
    """The architecture, preprocessing and labels an engine runs a file with."""

    arch: str
    preprocessing: Preprocessing
    labels: tuple[str, ...]


def file_facts(path: str | os.PathLike, model: str | None, metadata: Mapping[str, Any], layout: str,
               side: int | None, num_classes: int, overrides: Mapping[str, Any] | None) -> FileFacts:
    """What to run ``path`` with: its metadata, ``overrides`` (``Preprocessing.with_overrides``
    fields, None values ignored) on top, or a warned guess for a file without metadata.

    ``model``, when given, must agree with the file's architecture. ``side``: the graph's
    fixed input side (None: dynamic). ``layout``: ``onnx_metadata``'s input layout.
    """
    arch = str(metadata.get("arch", "unknown"))
    if arch != "unknown":  # a file without metadata cannot be checked
        FileEngine.check_arch(path, model, arch)
    recipe = Preprocessing.from_dict(metadata.get("preprocessing") or {"size": side or 224})
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    if given:
        recipe = _override(path, recipe, given, layout, side)
    elif not metadata and layout == INPUT_FLOAT:
        warnings.warn(_guessed(path, recipe, side, num_classes), GuessedPreprocessingWarning, stacklevel=4)
    labels = resolve_labels(metadata.get("labels", "imagenet1k"), num_classes)
    if layout != INPUT_FLOAT:
        recipe = PassThrough(**recipe.to_dict())
    return FileFacts(arch, recipe, labels)


#: ``Preprocessing.with_overrides`` fields and the options that set them
_OVERRIDE_OPTIONS = {"size": "--size", "crop_fraction": "--crop-pct", "interpolation": "--interpolation",
                     "mean": "--mean", "std": "--std"}


def _override(path: Any, recipe: Preprocessing, overrides: Mapping[str, Any], layout: str,
              side: int | None) -> Preprocessing:
    if layout != INPUT_FLOAT:
        options = ", ".join(_OVERRIDE_OPTIONS.get(key, key) for key in overrides)
        raise UsageError(f"{path} preprocesses images inside the graph (exported --with-preprocessing or --input nv12): its size, "
                         f"crop and normalization are fixed, so {options} cannot change them")
    size = overrides.get("size")
    if size is not None and side is not None and size != side:
        raise UsageError(f"{path} takes {side}x{side} inputs: it cannot run at --size {size}")
    return recipe.with_overrides(**overrides)


def _guessed(path: Any, recipe: Preprocessing, side: int | None, num_classes: int) -> str:
    """The one-line warning for a float32 graph without effnet metadata: what was guessed."""
    labels = " and ImageNet class names" if num_classes == 1000 else ""
    origin = "the input's" if side else "a guess too"
    return (
        f"{path} has no effnet metadata: guessed preprocessing size {recipe.size} ({origin}), "
        f"crop {recipe.crop_fraction:g} "
        f"({recipe.crop_mode}, {recipe.interpolation}), mean {','.join(f'{v:g}' for v in recipe.mean)}, "
        f"std {','.join(f'{v:g}' for v in recipe.std)}{labels}; set --size, --crop-pct, --interpolation, --mean "
        "and --std if it was trained otherwise"
    )
