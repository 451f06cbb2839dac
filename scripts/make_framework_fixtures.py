"""Parity fixtures made by the real PaddleClas and mindcv EfficientNets (tests/weights/fixtures).

Runs inside a virtualenv that has the framework, not effnet's. The committed fixtures were
made with paddlepaddle 3.3.1 + paddleclas 2.6.0 and mindspore 2.10.0 + mindcv 0.3.0 (Python
3.11, CPU)::

    python -m venv .venv-paddle && .venv-paddle/bin/pip install paddlepaddle paddleclas
    .venv-paddle/bin/python scripts/make_framework_fixtures.py paddle tests/weights/fixtures

    python -m venv .venv-mindspore && .venv-mindspore/bin/pip install "numpy<2" mindspore mindcv
    .venv-mindspore/bin/python scripts/make_framework_fixtures.py mindspore tests/weights/fixtures

For every model it builds the framework's own EfficientNet, fills every parameter and
BatchNorm statistic with seeded random values (so BatchNorm matters), saves the checkpoint
in the framework's format (``.pdparams`` / ``.ckpt``) and writes ``<name>.npz``: the logits for
one random uint8 image at the nominal size and one at an odd size (``logits_nominal``,
``logits_odd``) and the settings (``settings``, JSON). The images are not stored: they are
``np.random.RandomState(IMAGE_SEED).randint(0, 256, (1, H, W, 3))`` (nominal first), which the
legacy generator reproduces in any numpy, and ``settings["images_sha256"]`` lets the tests
check that they rebuilt the same ones. Network inputs are ``(image / 255 - mean) / std``
with ImageNet mean/std.

By default the models are small (width 0.3 or 0.2, depth 0.5, 10 classes: about 1 MB
each) so that they can be committed; ``--full`` makes full-size B0 and B3 instead (1000
classes, 21 and 49 MB per framework), which ``EFFNET_FRAMEWORK_FIXTURES=DIR pytest
tests/weights/test_sources_paddle.py tests/weights/test_sources_mindspore.py`` checks too.
PaddleClas names parameters globally, so each model is built in its own process.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_SEED = 20240519
IMAGE_SEED = 7
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Fixture:
    """One model to build: the framework's constructor and effnet's matching architecture."""

    name: str
    framework: str
    model: str
    arch: str
    width: float | None
    depth: float | None
    num_classes: int
    size: int
    odd_size: tuple[int, int]


def _reduced(framework: str, prefix: str, model: str, arch: str, width: float) -> Fixture:
    return Fixture(f"{prefix}_w{str(width).replace('.', '')}_d05", framework, model, arch, width, 0.5, 10, 224,
                   (225, 227))


#: PaddleClas never adds the shortcut to the first block of a stage (its stride is a list
#: there, so ``stride == 1`` is false); at width 0.2 stage 1's first block is 8 -> 8 channels
#: and would need one, so its models are reduced to width 0.3 instead.
SMALL = [
    _reduced("paddle", "paddle_b0", "EfficientNetB0", "efficientnet_b0", 0.3),
    _reduced("paddle", "paddle_b0_small", "EfficientNetB0_small", "efficientnet_b0_small", 0.3),
    _reduced("mindspore", "mindcv_b0", "efficientnet_b0", "efficientnet_b0", 0.2),
]
FULL = [
    Fixture("paddle_b0", "paddle", "EfficientNetB0", "efficientnet_b0", None, None, 1000, 224, (225, 227)),
    Fixture("paddle_b3", "paddle", "EfficientNetB3", "efficientnet_b3", None, None, 1000, 300, (301, 303)),
    Fixture("mindcv_b0", "mindspore", "efficientnet_b0", "efficientnet_b0", None, None, 1000, 224, (225, 227)),
    Fixture("mindcv_b3", "mindspore", "efficientnet_b3", "efficientnet_b3", None, None, 1000, 300, (301, 303)),
]


def images(fixture: Fixture) -> dict[str, np.ndarray]:
    """The two input images, from their own seed (not the weights' generator)."""
    rng = np.random.RandomState(IMAGE_SEED)
    odd_h, odd_w = fixture.odd_size
    return {"nominal": rng.randint(0, 256, (1, fixture.size, fixture.size, 3)).astype(np.uint8),
            "odd": rng.randint(0, 256, (1, odd_h, odd_w, 3)).astype(np.uint8)}


def normalize(image: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 network input (ImageNet mean/std)."""
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    return ((image / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def random_tensor(rng: np.random.RandomState, role: str, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    """Values for one tensor by its role: He-normal convs, uniform linear layers, and BatchNorm
    scale/shift/statistics far enough from (1, 0, 0, 1) that BatchNorm changes the output."""
    if role == "conv":
        values = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif role == "linear":
        values = rng.uniform(-1.0, 1.0, shape) / np.sqrt(fan_in)
    elif role == "scale":
        values = rng.uniform(0.5, 1.5, shape)
    elif role == "variance":
        values = rng.uniform(0.5, 2.0, shape)
    else:  # bias, shift, mean
        values = rng.normal(0.0, 0.2, shape)
    return values.astype(np.float32)


# -- PaddleClas ---------------------------------------------------------------------------
def make_paddle(fixture: Fixture, out: Path, rng: np.random.RandomState) -> tuple[Callable[[np.ndarray], Any], str]:
    import paddle
    from paddleclas.ppcls.arch.backbone import model_zoo

    paddle.set_device("cpu")
    constructor = getattr(model_zoo.efficientnet, fixture.model)
    overrides = None
    if fixture.width is not None:
        overrides = {"width_coefficient": fixture.width, "depth_coefficient": fixture.depth}
    model = constructor(override_params=overrides, class_num=fixture.num_classes)
    model.eval()
    for key, tensor in model.state_dict().items():
        shape = tuple(tensor.shape)
        if key.endswith("._mean"):
            role = "mean"
        elif key.endswith("._variance"):
            role = "variance"
        elif key.endswith(".weight") and len(shape) == 4:
            role = "conv"
        elif key.endswith(".weight") and len(shape) == 2:
            role = "linear"  # Paddle's Linear weight is (in, out)
        elif key.endswith(".weight"):
            role = "scale"
        else:
            role = "bias"
        fan_in = shape[0] if role == "linear" else int(np.prod(shape[1:]))
        tensor.set_value(random_tensor(rng, role, shape, fan_in))
    paddle.save(model.state_dict(), str(out / f"{fixture.name}.pdparams"))

    def run(image: np.ndarray) -> np.ndarray:
        with paddle.no_grad():
            return model(paddle.to_tensor(normalize(image))).numpy()

    return run, f"paddlepaddle {paddle.__version__}"


# -- mindcv -------------------------------------------------------------------------------
def make_mindspore(fixture: Fixture, out: Path, rng: np.random.RandomState) -> tuple[Callable[[np.ndarray], Any], str]:
    import mindcv
    import mindspore as ms
    from mindcv.models import efficientnet

    ms.set_device("CPU")
    if fixture.width is None:
        net = getattr(efficientnet, fixture.model)(num_classes=fixture.num_classes)
    else:
        net = efficientnet.EfficientNet(fixture.model, dropout_rate=0.2, width_mult=fixture.width,
                                        depth_mult=fixture.depth, num_classes=fixture.num_classes)
    net.set_train(False)
    for name, parameter in net.parameters_and_names():
        shape = tuple(parameter.shape)
        leaf = name.rsplit(".", 1)[-1]
        role = {"gamma": "scale", "moving_variance": "variance", "moving_mean": "mean", "beta": "bias",
                "bias": "bias"}.get(leaf, "conv" if len(shape) == 4 else "linear")
        parameter.set_data(ms.Tensor(random_tensor(rng, role, shape, int(np.prod(shape[1:])))))
    path = str(out / f"{fixture.name}.ckpt")
    if fixture.width is None:
        ms.save_checkpoint(net, path)
    else:
        # As mindcv's training saves it: optimizer slots and counters beside the weights, a
        # string value, and the CRC trailer.
        loss = ms.nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        optimizer = ms.nn.Momentum(net.trainable_params(), learning_rate=0.1, momentum=0.9)
        train_net = ms.nn.TrainOneStepCell(ms.nn.WithLossCell(net, loss), optimizer)
        ms.save_checkpoint(train_net, path, crc_check=True,
                           append_dict={"epoch_num": 0, "producer": f"mindcv {mindcv.__version__}"})

    def run(image: np.ndarray) -> np.ndarray:
        return net(ms.Tensor(normalize(image))).asnumpy()

    return run, f"mindspore {ms.__version__}"


MAKERS = {"paddle": make_paddle, "mindspore": make_mindspore}


def make_one(fixture: Fixture, out: Path) -> None:
    run, version = MAKERS[fixture.framework](fixture, out, np.random.RandomState(WEIGHTS_SEED))
    pictures = images(fixture)
    logits = {f"logits_{which}": run(image).astype(np.float32) for which, image in pictures.items()}
    digest = hashlib.sha256(b"".join(image.tobytes() for image in pictures.values())).hexdigest()
    settings = asdict(fixture) | {"framework_version": version, "weights_seed": WEIGHTS_SEED,
                                  "image_seed": IMAGE_SEED, "images_sha256": digest}
    np.savez_compressed(out / f"{fixture.name}.npz", settings=np.array(json.dumps(settings)), **logits)
    top = np.abs(logits["logits_nominal"]).max()
    print(f"{fixture.name}: logits std {logits['logits_nominal'].std():.3f}, max |logit| {top:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("framework", choices=sorted(MAKERS))
    parser.add_argument("out", type=Path)
    parser.add_argument("--full", action="store_true", help="full-size B0 and B3 instead of the small models")
    parser.add_argument("--only", help=argparse.SUPPRESS)  # one fixture, in this process
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    fixtures = [f for f in (FULL if args.full else SMALL) if f.framework == args.framework]
    if args.only:
        make_one(next(f for f in fixtures if f.name == args.only), args.out)
        return 0
    for fixture in fixtures:
        command = [sys.executable, __file__, args.framework, str(args.out), "--only", fixture.name]
        if args.full:
            command.append("--full")
        threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
        subprocess.run(command, check=True, env=os.environ | threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
