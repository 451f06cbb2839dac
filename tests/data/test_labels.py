"""ImageNet class names: readable, one per class, and tied to the WordNet ids."""

from __future__ import annotations

from effnet.data.labels import imagenet_names, imagenet_synsets, resolve_labels


def test_names_are_readable_and_follow_the_synsets() -> None:
    names, synsets = imagenet_names(), imagenet_synsets()
    assert len(names) == len(synsets) == 1000
    # (index, WordNet id, name): first, last and the classes our photos land in (ImageNet's synset list)
    for index, synset, name in ((0, "n01440764", "tench"), (281, "n02123045", "tabby cat"),
                                (282, "n02123159", "tiger cat"), (967, "n07920052", "espresso"),
                                (999, "n15075141", "toilet paper")):
        assert (synsets[index], names[index]) == (synset, name)
    assert not [name for name in names if name.startswith("a ")]  # names, not descriptions


def test_other_label_sets() -> None:
    assert resolve_labels(["zero", "one"], 2) == ("zero", "one")
    assert resolve_labels("imagenet1k", 10) == tuple(f"class_{i}" for i in range(10))


def test_every_imagenet_name_is_unique() -> None:
    """The clean list names 657 and 744 both "missile" and 836 and 837 both "sunglasses";
    torchvision's names tell them apart."""
    names = imagenet_names()
    assert len(set(names)) == 1000
    assert [names[i] for i in (657, 744, 836, 837)] == ["missile", "projectile", "sunglass", "sunglasses"]
    assert [names[i] for i in (285, 968)] == ["Egyptian Mau", "tea cup"]  # as docs/evaluate.md quotes them
