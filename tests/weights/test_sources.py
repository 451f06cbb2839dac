"""The sources registry: each layout is recognised by its own tensor names and counts its classes."""

from __future__ import annotations

import pytest
import torch

from effnet.errors import WeightsError
from effnet.weights.sources import SOURCES, classifier_rows, detect_source

#: (stem tensor, classifier tensor, classifier shape for 10 classes) as each ecosystem names them:
#: efficientnet_pytorch ``_fc``, timm ``classifier``, torchvision ``classifier.1`` (after dropout),
#: Keras's dense kernel ``predictions`` stored (in, out), PaddleClas's ``_fc`` (in, out) too, mindcv's
#: ``mlp_head``.
LAYOUTS = {
    "lukemelas": ("_conv_stem.weight", "_fc.weight", (10, 1280)),
    "timm": ("conv_stem.weight", "classifier.weight", (10, 1280)),
    "torchvision": ("features.0.0.weight", "classifier.1.weight", (10, 1280)),
    "keras": ("stem_conv/0", "predictions/0", (1280, 10)),
    "paddle": ("_ef._conv_stem._conv._conv._conv.weight", "_fc.weight", (1280, 10)),
    "mindspore": ("features.0.weight", "mlp_head.weight", (10, 1280)),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_each_layout_is_detected_and_counts_its_classes(name: str) -> None:
    stem, classifier, shape = LAYOUTS[name]
    state = {stem: torch.zeros(1), classifier: torch.zeros(shape)}
    assert detect_source(state) == name
    assert classifier_rows(state) == classifier_rows(state, name) == 10


def test_every_convertible_source_has_a_layout_and_ours_is_recognised_by_metadata_only() -> None:
    assert {name for name, source in SOURCES.items() if source.convertible} == set(LAYOUTS)
    assert SOURCES["effnet"].markers == () and not SOURCES["effnet"].convertible


def test_an_unknown_layout_says_to_pass_from() -> None:
    with pytest.raises(WeightsError, match=r"unrecognised checkpoint layout \(first keys: head\.w\); pass --from"):
        detect_source({"head.w": torch.zeros(1)})
