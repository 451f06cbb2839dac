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
