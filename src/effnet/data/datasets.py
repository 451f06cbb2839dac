"""Labelled image sets on disk: ImageFolder trees and image folders with a label file.

Class folders may be named by class index (``967/``, ``0967/``), by ImageNet synset id
(``n07920052/``), by a model's own class names, or mapped through a ``--class-map`` file.
Loading never raises on a bad image: the sample comes back marked as failed so a data
loader can count it, list it and go on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EffnetError
from .images import IMAGE_SUFFIXES, ImageError, load_image
from .labels import imagenet_synsets


class DatasetError(EffnetError):
    """A dataset that cannot be used as given (missing folder, unknown class name, ...)."""


_SYNSET = re.compile(r"^n\d{8}$")


def read_class_map(path: str | Path) -> dict[str, int]:
    """``name index`` lines (whitespace or comma separated) or a JSON object -> mapping."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: class map not found")
    text = path.read_text()
    if text.lstrip().startswith("{"):
        return {str(k): int(v) for k, v in json.loads(text).items()}
    mapping: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = re.split(r"[,\s]+", line)
        if len(parts) < 2 or not parts[-1].lstrip("-").isdigit():
            raise DatasetError(f"{path}:{number}: expected 'name index', got {line!r}")
        mapping[" ".join(parts[:-1])] = int(parts[-1])
    return mapping


@dataclass
class LabelResolver:
    """Turns a folder name or label token into a class index, or says why it cannot."""

    num_classes: int = 1000
    class_names: Sequence[str] | None = None
    class_map: dict[str, int] | None = None

    def __call__(self, token: str) -> int:
        if self.class_map is not None:
            if token not in self.class_map:
                raise DatasetError(f"class '{token}' is not in the class map")
            return self.class_map[token]
        if self.class_names is not None and token in self.class_names:
            return list(self.class_names).index(token)
        if token.isdigit():
            index = int(token)
            if index >= self.num_classes:
                raise DatasetError(f"class index {index} out of range for {self.num_classes} classes")
            return index
        if _SYNSET.match(token) and self.num_classes == 1000:
            synsets = imagenet_synsets()
            if token in synsets:
                return synsets.index(token)
        raise DatasetError(
            f"cannot map class '{token}' to an index: name folders by class index (967 or 0967), "
            "ImageNet synset (n07920052), the model's class names, or pass --class-map FILE"
        )


def scan_image_folder(root: str | Path, resolver: LabelResolver) -> list[tuple[Path, int]]:
    """``root/<class>/**/image`` -> sorted (path, index) samples."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    samples: list[tuple[Path, int]] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        index = resolver(folder.name)
        samples += [(p, index) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        raise DatasetError(f"{root}: no images found in class sub-folders")
    return samples


def read_label_file(images: str | Path, label_file: str | Path, resolver: LabelResolver) -> list[tuple[Path, int]]:
    """An image folder plus ``filename label`` lines (the ImageNet validation format)."""
    images, label_file = Path(images), Path(label_file)
    if not label_file.is_file():
        raise DatasetError(f"{label_file}: label file not found")
    samples: list[tuple[Path, int]] = []
    for number, line in enumerate(label_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{label_file}:{number}: expected 'filename label', got {line!r}")
        samples.append((images / parts[0], resolver(parts[1])))
    if not samples:
        raise DatasetError(f"{label_file}: no labelled lines")
    return samples


@dataclass(frozen=True)
class Failed:
    """A sample whose image could not be used; the reason is one line."""

    path: str
    reason: str


class ImageDataset:
    """Indexable (path, label) samples decoded and transformed on access.

    ``transform`` maps an HxWx3 uint8 array to whatever the consumer needs (the eval
    preprocessing, or the training augmentation). A bad image yields ``Failed`` instead
    of raising, so one corrupt file never stops an epoch.
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Callable[[np.ndarray], Any]) -> None:
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        try:
            return self.transform(load_image(path)), label
        except ImageError as error:
            return Failed(str(path), error.reason), label
