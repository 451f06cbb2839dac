"""Labelled image sets on disk: ImageFolder trees and image folders with a label file.

Class folders may be named by class index (``967/``, ``0967/``), by ImageNet synset id
(``n07920052/``), by a model's own class names, or mapped through a ``--class-map`` file.
A label file has ``filename label`` lines (the ImageNet validation format); for evaluation a
line may list several acceptable labels (``chelsea.png 281,282,285``) for photos whose
ImageNet class is genuinely ambiguous. Loading never raises on a bad image: the sample comes
back marked as failed so a data loader can count it, list it and go on.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EffnetError
from .images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, _read_bytes, decode_image_reduced, find_images, load_image
from .labels import imagenet_synsets
from .transforms import Preprocessing


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


@lru_cache(maxsize=8)
def _positions(names: tuple[str, ...]) -> dict[str, list[int]]:
    """name -> every index with that name: a label file of 50,000 lines must not scan 1000
    names per line, and a name two classes share must be refused, not resolved to the first."""
    positions: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        positions.setdefault(name, []).append(index)
    return positions


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
            index = self.class_map[token]
            if not 0 <= index < self.num_classes:
                raise DatasetError(f"class map sends '{token}' to {index}, out of range for {self.num_classes} classes")
            return index
        names = _positions(tuple(self.class_names)) if self.class_names is not None else {}
        if token in names:
            indices = names[token]
            if len(indices) > 1:
                listed = ", ".join(map(str, indices[:-1])) + f" and {indices[-1]}"
                share = "both" if len(indices) == 2 else "all"
                raise DatasetError(f"class name '{token}' is ambiguous: classes {listed} are {share} called that; "
                                   "use the class index or synset instead")
            return indices[0]
        if token.isdigit():
            index = int(token)
            if index >= self.num_classes:
                raise DatasetError(f"class index {index} out of range for {self.num_classes} classes")
            return index
        if _SYNSET.match(token) and self.num_classes == 1000:
            synsets = _positions(imagenet_synsets())
            if token in synsets:
                return synsets[token][0]
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
        try:
            index = resolver(folder.name)
        except DatasetError as error:
            raise DatasetError(f"{folder}: {error}") from None
        samples += [(p, index) for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not samples:
        raise DatasetError(f"{root}: no images found in class sub-folders (for a flat folder pass --labels FILE)")
    return samples


def parse_label_file(
    images: str | Path, label_file: str | Path, resolver: LabelResolver
) -> list[tuple[Path, tuple[int, ...]]]:
    """``filename label[,label...]`` lines -> (path, acceptable class indices) samples.

    The filename is everything before the last whitespace, so names with spaces work. Paths
    are relative to ``images``. Several comma-separated labels mean "any of these is right"
    (the ImageNet-ReaL convention for images showing more than one plausible class).
    """
    images, label_file = Path(images), Path(label_file)
    if not label_file.is_file():
        raise DatasetError(f"{label_file}: label file not found")
    samples: list[tuple[Path, tuple[int, ...]]] = []
    for number, line in enumerate(label_file.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        tokens = [t for t in parts[-1].split(",") if t] if len(parts) == 2 else []
        if not tokens:
            raise DatasetError(f"{label_file}:{number}: expected 'filename label', got {line!r}")
        try:
            labels = tuple(dict.fromkeys(resolver(token) for token in tokens))
        except DatasetError as error:
            raise DatasetError(f"{label_file}:{number}: {error}") from None
        samples.append((images / parts[0], labels))
    if not samples:
        raise DatasetError(f"{label_file}: no labelled lines")
    return samples


@dataclass(frozen=True)
class EvalSet:
    """Images and, per image, the class indices that count as correct (the first is its class).

    ``targets`` is None for a flat folder of unlabelled images (fp32-vs-int8 agreement needs
    no labels)."""

    root: Path
    layout: str
    paths: list[Path]
    targets: list[tuple[int, ...]] | None

    def __len__(self) -> int:
        return len(self.paths)


def spread(count: int, limit: int | None) -> list[int]:
    """``limit`` positions spread evenly over ``count`` samples (every class gets a say)."""
    if limit is None or limit >= count:
        return list(range(count))
    return [i * count // limit for i in range(limit)]


def load_eval_set(
    data: str | Path,
    resolver: LabelResolver,
    labels: str | Path | None = None,
    limit: int | None = None,
    allow_unlabelled: bool = False,
) -> EvalSet:
    """An ImageFolder tree, or a folder plus a label file, as an ``EvalSet``.

    ``allow_unlabelled``: a folder without class sub-folders and without a label file gives
    its images with ``targets=None`` instead of an error.
    """
    root = Path(data)
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "folder not found"
        raise DatasetError(f"{root}: {problem} (an ImageFolder tree, or an image folder with a label file)")
    if labels is not None:
        pairs: list[tuple[Path, tuple[int, ...] | None]] = list(parse_label_file(root, labels, resolver))
        layout = "label file"
    elif allow_unlabelled and not any(p.is_dir() for p in root.iterdir()):
        found = find_images(root)
        if not found:
            raise DatasetError(f"{root}: no images in this folder")
        pairs, layout = [(path, None) for path in found], "unlabelled images"
    else:
        pairs = [(path, (index,)) for path, index in scan_image_folder(root, resolver)]
        layout = "class folders"
    pairs = [pairs[i] for i in spread(len(pairs), limit)]
    targets = None if layout == "unlabelled images" else [t for _, t in pairs]
    return EvalSet(root, layout, [p for p, _ in pairs], targets)  # type: ignore[arg-type]


# -- decoding at reduced size ---------------------------------------------------------------
#: How much larger than the preprocessing's working resolution a DCT-reduced decode must stay.
#: ``benchmarks/eval_decode_scaling.py`` on real photos: at 3x the network input differs from a
#: full decode by less than re-saving the JPEG at quality 95 does, and no top-1 changed; at 2x
#: the difference is about twice that and a near-tie (p = 0.07) flipped (docs/evaluate.md).
REDUCE_SAFETY = 3.0


def reduced_decode_side(preprocessing: Preprocessing, safety: float = REDUCE_SAFETY) -> int:
    """Shortest side a JPEG may be decoded to without changing what the network sees.

    Every crop mode resizes the image's short side to about ``size / crop_fraction`` (or
    ``size`` when it squashes); a DCT-reduced decode that keeps ``safety`` times that many
    pixels leaves the final antialiased resize enough detail to produce the same input.
    """
    working = preprocessing.size if preprocessing.crop_mode == "resize" else preprocessing.size / preprocessing.crop_fraction
    return math.ceil(safety * working)


def load_image_reduced(
    path: str | Path, min_side: int, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like ``load_image``, but a large JPEG is decoded straight to a smaller size (see
    ``images.decode_image_reduced``); returns the image and the upright full-size (height, width)."""
    name = str(path)
    return decode_image_reduced(_read_bytes(Path(path), name), name, min_side, max_pixels)


@dataclass(frozen=True)
class Failed:
    """A sample whose image could not be used; the reason is one line."""

    path: str
    reason: str


class ImageDataset:
    """Indexable (path, label) samples decoded and transformed on access.

    ``transform`` maps an HxWx3 uint8 array to whatever the consumer needs (the eval
    preprocessing, or the training augmentation). A bad image yields ``Failed`` instead
    of raising, so one corrupt file never stops an epoch. With ``reduce_to`` set, large
    JPEGs are decoded at reduced size (see ``load_image_reduced``) and ``transform`` is
    called as ``transform(image, source_size=(height, width))``, as ``Preprocessing`` accepts.
    """

    def __init__(
        self,
        samples: Sequence[tuple[Path, Any]],
        transform: Callable[[np.ndarray], Any],
        reduce_to: int | None = None,
    ) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.reduce_to = reduce_to

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        path, label = self.samples[index]
        try:
            if self.reduce_to:
                image, source_size = load_image_reduced(path, self.reduce_to)
                return self.transform(image, source_size=source_size), label
            return self.transform(load_image(path)), label
        except ImageError as error:
            return Failed(str(path), error.reason), label
