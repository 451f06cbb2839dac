"""Converters: key maps checked against the sources' real names, strict errors, Keras normalization."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from effnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from effnet.errors import WeightsError, WeightsMismatchError
from effnet.models.network import build_model
from effnet.models.variants import resolve
from effnet.weights.conversion import check_compatible, fill_batch_counters
from effnet.weights.registry import get_weights
from effnet.weights.sources import convert_state_dict, detect_source, torchvision
from effnet.weights.sources.keras import from_keras, keras_input_normalization

# Parameter names and shapes of torchvision's own models (printed from
# torchvision.models.efficientnet_b2 / efficientnet_v2_s state dicts): one of each kind of
# layer, including the no-expansion first stage, SE placement and the head.
TORCHVISION_FACTS = {
    "efficientnet_b2": {
        "features.0.0.weight": (32, 3, 3, 3),
        "features.1.0.block.0.0.weight": (32, 1, 3, 3),
        "features.1.0.block.1.fc1.weight": (8, 32, 1, 1),
        "features.1.0.block.2.0.weight": (16, 32, 1, 1),
        "features.1.1.block.2.0.weight": (16, 16, 1, 1),
        "features.2.0.block.0.0.weight": (96, 16, 1, 1),
        "features.2.0.block.2.fc1.weight": (4, 96, 1, 1),
        "features.3.0.block.1.0.weight": (144, 1, 5, 5),
        "features.6.1.block.2.fc1.weight": (52, 1248, 1, 1),
        "features.7.1.block.3.0.weight": (352, 2112, 1, 1),
        "features.8.0.weight": (1408, 352, 1, 1),
        "classifier.1.weight": (1000, 1408),
    },
    "efficientnetv2_s": {
        "features.0.0.weight": (24, 3, 3, 3),
        "features.1.0.block.0.0.weight": (24, 24, 3, 3),
        "features.1.1.block.0.1.bias": (24,),
        "features.2.0.block.0.0.weight": (96, 24, 3, 3),
        "features.2.0.block.1.0.weight": (48, 96, 1, 1),
        "features.3.3.block.1.0.weight": (64, 256, 1, 1),
        "features.4.0.block.1.0.weight": (256, 1, 3, 3),
        "features.4.0.block.2.fc1.weight": (16, 256, 1, 1),
        "features.4.0.block.3.0.weight": (128, 256, 1, 1),
        "features.5.1.block.2.fc2.weight": (960, 40, 1, 1),
        "features.5.5.block.3.1.weight": (160,),
    },
}


def torchvision_layout(arch: str) -> dict[str, torch.Tensor]:
    """Our tensors (on the meta device) under torchvision's names."""
    with torch.device("meta"):
        ours = build_model(arch).state_dict()
    inverse = {v: k for k, v in torchvision.key_map(resolve(arch)).items()}
    out = {}
    for key, tensor in ours.items():
        module, _, leaf = key.rpartition(".")
        out[f"{inverse[module]}.{leaf}"] = tensor
    return out


@pytest.mark.parametrize("arch", list(TORCHVISION_FACTS))
def test_torchvision_map_reproduces_torchvision_names(arch: str) -> None:
    theirs = torchvision_layout(arch)
    for key, shape in TORCHVISION_FACTS[arch].items():
        assert tuple(theirs[key].shape) == shape, key
    tv_params = sum(t.numel() for k, t in theirs.items() if not k.endswith(("running_mean", "running_var", "tracked")))
    assert tv_params == get_weights("tv_in1k", arch).num_params  # torchvision's published count
    with torch.device("meta"):
        expected = build_model(arch).state_dict()
    check_compatible(convert_state_dict(theirs, "torchvision", resolve(arch)), expected, arch)
    assert detect_source(theirs) == "torchvision"


def test_strict_errors_name_keys_and_shapes() -> None:
    from efficientnet_pytorch import EfficientNet

    state = EfficientNet.from_name("efficientnet-b0").state_dict()
    plan = resolve("efficientnet_b0")
    expected = build_model("efficientnet_b0").state_dict()

    missing = {k: v for k, v in state.items() if k != "_blocks.3._se_reduce.bias"}
    with pytest.raises(WeightsMismatchError, match=r"1 missing: blocks\.2\.0\.se\.conv_reduce\.bias"):
        check_compatible(convert_state_dict(missing, "lukemelas", plan), expected, "efficientnet_b0")

    extra = dict(state) | {"_blocks.99._bn1.weight": torch.ones(3)}
    with pytest.raises(WeightsMismatchError, match=r"1 unexpected: _blocks\.99\._bn1\.weight"):
        check_compatible(convert_state_dict(extra, "lukemelas", plan), expected, "efficientnet_b0")

    wrong = EfficientNet.from_name("efficientnet-b1").state_dict()
    with pytest.raises(WeightsMismatchError, match=r"weights do not fit efficientnet_b0: .* unexpected: _blocks\.16\."):
        check_compatible(convert_state_dict(wrong, "lukemelas", plan), expected, "efficientnet_b0")

    reshaped = dict(state) | {"_fc.weight": torch.zeros(10, 1280), "_fc.bias": torch.zeros(10)}
    with pytest.raises(WeightsMismatchError, match=r"classifier\.bias: file \(10,\) vs model \(1000,\)"):
        check_compatible(convert_state_dict(reshaped, "lukemelas", plan), expected, "efficientnet_b0")


def test_lukemelas_has_no_v2_blocks() -> None:
    with pytest.raises(WeightsError, match="V1/Lite blocks"):
        convert_state_dict({}, "lukemelas", resolve("efficientnetv2_s"))


def test_keras_unknown_layers_are_reported_not_dropped() -> None:
    plan = resolve("efficientnet_b0")
    state = {"stem_conv/0": torch.zeros(3, 3, 3, 32), "dense_1/0": torch.zeros(1280, 10),
             "normalization/0": torch.zeros(3)}
    converted = from_keras(state, plan)
    assert "conv_stem.weight" in converted and tuple(converted["conv_stem.weight"].shape) == (32, 3, 3, 3)
    assert "dense_1/0" in converted and not any(k.startswith("normalization") for k in converted)
    with pytest.raises(WeightsMismatchError, match="unexpected: dense_1/0"):
        check_compatible(converted, build_model("efficientnet_b0").state_dict(), "efficientnet_b0")


def test_missing_batch_counters_are_filled() -> None:
    """Keras files have no ``num_batches_tracked``: zero counters fill exactly those, a
    counter the file has is kept, and the result loads strictly."""
    model = build_model("efficientnet_lite0")
    expected = model.state_dict()
    counters = sorted(k for k in expected if k.endswith("num_batches_tracked"))
    state = {k: v for k, v in expected.items() if k not in counters}
    with pytest.raises(WeightsMismatchError, match=rf"{len(counters)} missing: .*num_batches_tracked"):
        check_compatible(state, expected, "efficientnet_lite0")
    filled = fill_batch_counters(dict(state), expected)
    assert sorted(set(filled) - set(state)) == counters
    assert all(filled[k].dtype == torch.long and filled[k].item() == 0 for k in counters)
    check_compatible(filled, expected, "efficientnet_lite0")
    model.load_state_dict(filled)  # strict

    kept = fill_batch_counters(dict(state) | {counters[0]: torch.tensor(7)}, expected)
    assert kept[counters[0]].item() == 7


# -- what Keras's own preprocessing layers do, as mean/std on the 0-1 scale -------------------
def test_keras_config_layers_are_composed_exactly() -> None:
    """keras.applications EfficientNetB0(weights="imagenet"): Rescaling(1/255), Normalization
    holding ImageNet's std as its variance, Rescaling(1/sqrt(std)) -> ImageNet mean/std."""
    layers = [
        {"kind": "Rescaling", "scale": 1 / 255, "offset": 0.0},
        {"kind": "Normalization", "name": "normalization", "mean": None, "variance": None, "invert": False},
        {"kind": "Rescaling", "scale": [1 / np.sqrt(s) for s in IMAGENET_STD], "offset": 0.0},
    ]
    state = {"normalization/0": torch.tensor(IMAGENET_MEAN), "normalization/1": torch.tensor(IMAGENET_STD)}
    metadata = {"keras_preprocessing": json.dumps(layers)}
    mean, std = keras_input_normalization(state, metadata, resolve("efficientnet_b0"))
    assert mean == pytest.approx(IMAGENET_MEAN) and std == pytest.approx(IMAGENET_STD)


@pytest.mark.parametrize(
    "arch,variance,mean,std",
    [
        ("efficientnetv2_b2", None, IMAGENET_MEAN, IMAGENET_STD),  # V2 B0-B3: ImageNet mean/std
        ("efficientnetv2_m", None, (128 / 255,) * 3, (128 / 255,) * 3),  # V2 S/M/L: x / 128 - 1
        ("efficientnet_b3", (1.0, 1.0, 1.0), (0.0,) * 3, (1.0,) * 3),  # V1 built with weights=None
        ("efficientnet_b3", IMAGENET_STD, IMAGENET_MEAN, IMAGENET_STD),  # keras-applications files
        ("efficientnet_b3", (0.04, 0.09, 0.16), IMAGENET_MEAN, (0.2, 0.3, 0.4)),  # adapted: sqrt(var)
    ],
)
def test_keras_weights_only_files_follow_keras_applications(arch, variance, mean, std) -> None:  # noqa: ANN001
    state, layers = {}, ["stem_conv"]
    if variance is not None:
        state = {"normalization/0": torch.tensor(mean), "normalization/1": torch.tensor(variance)}
        layers.insert(0, "normalization")
    got_mean, got_std = keras_input_normalization(state, {"keras_layers": json.dumps(layers)}, resolve(arch))
    assert got_mean == pytest.approx(mean) and got_std == pytest.approx(std)


def test_keras_files_are_recognised_as_files() -> None:
    from effnet.weights.loading import looks_like_path

    assert all(looks_like_path(name) for name in ("efficientnetb0.h5", "mine.keras", "v2s.weights.h5"))
    assert not looks_like_path("tf_in1k")
