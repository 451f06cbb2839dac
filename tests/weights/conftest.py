"""Fixtures for the parity tests: seeded inputs, our twin of a reference with random but
well-scaled weights, and the checkpoints and logits PaddleClas and mindcv made
(``fixtures/``, written by ``scripts/make_framework_fixtures.py``)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from effnet.models.network import EfficientNet, build_model
from effnet.models.spec import Padding
from effnet.models.variants import resolve
from effnet.weights.conversion import check_compatible, fill_batch_counters
from effnet.weights.sources import convert_state_dict


def _calibrate(model: nn.Module, images: torch.Tensor, seed: int = 0) -> nn.Module:
    """Random BatchNorm affines, then running statistics measured on ``images``.

    Random conv weights with BatchNorm's initial statistics (mean 0, variance 1) make
    activations grow through dozens of residual blocks until logits reach the hundreds, where
    fp32 rounding alone exceeds 1e-4. Measuring the statistics on real inputs (only the norm
    layers in train mode, so no dropout or drop-path is applied) keeps every layer near unit
    scale, as in a trained network.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:
            norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) * 0.5 + 0.75)
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator) * 0.1)
            norm.reset_running_stats()
            norm.momentum = None  # cumulative average: one batch sets the statistics
        model.eval()
        for norm in norms:
            norm.train()
        model(images)
    return model.eval()


def _ours_from(reference_state: dict[str, torch.Tensor], arch: str, source: str, padding: Padding,
               bn_eps: float) -> EfficientNet:
    """Our model with a reference's tensors, converted and strictly checked."""
    model = build_model(arch, padding=padding, bn_eps=bn_eps).eval()
    state = convert_state_dict(reference_state, source, resolve(arch))
    fill_batch_counters(state, model.state_dict())
    check_compatible(state, model.state_dict(), arch)
    model.load_state_dict(state)
    return model


def _images(batch: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def images() -> Callable[..., torch.Tensor]:
    """``images(batch, height, width, seed=1)``: a seeded NCHW batch."""
    return _images


@pytest.fixture()
def twin() -> Callable[..., EfficientNet]:
    """``twin(reference, batch, arch, source, padding, bn_eps)``: calibrate the reference on
    ``batch`` (in place), then build our model from its converted tensors."""

    def make(reference: nn.Module, batch: torch.Tensor, arch: str, source: str, padding: Padding,
             bn_eps: float) -> EfficientNet:
        _calibrate(reference, batch)
        return _ours_from(reference.state_dict(), arch, source, padding, bn_eps)

    return make


# -- checkpoints made by the frameworks themselves --------------------------------------------
FRAMEWORK_FIXTURES = Path(__file__).parent / "fixtures"
#: a folder of more fixtures (``make_framework_fixtures.py --full``: full-size B0 and B3) to check too
EXTRA_FIXTURES_ENV = "EFFNET_FRAMEWORK_FIXTURES"
CHECKPOINT_SUFFIXES = {"paddle": ".pdparams", "mindspore": ".ckpt"}


@dataclass(frozen=True)
class FrameworkCase:
    """One model a framework built: its checkpoint, settings, the two images and its logits."""

    checkpoint: Path
    settings: dict[str, Any]
    images: dict[str, np.ndarray]
    logits: dict[str, np.ndarray]
    committed: bool

    @property
    def shape(self) -> dict[str, float]:
        """The width/depth overrides of a reduced model (none for a full-size one)."""
        if self.settings["width"] is None:
            return {}
        return {"width_mult": self.settings["width"], "depth_mult": self.settings["depth"]}

    def inputs(self, which: str) -> torch.Tensor:
        """The network input for image ``which`` (nominal, odd): ImageNet mean/std, as the script."""
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        image = self.images[which]
        return torch.from_numpy(((image / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))

    def tolerance(self, which: str) -> float:
        """1e-4 absolute for the committed models; relative to the largest logit above 1 for
        full-size ones, whose random-weight logits reach 50 and round by more in float32."""
        largest = float(np.abs(self.logits[which]).max())
        return 1e-4 if self.committed else 1e-4 * max(1.0, largest)


def _framework_case(npz: Path, committed: bool) -> FrameworkCase:
    with np.load(npz) as archive:
        settings = json.loads(str(archive["settings"]))
        logits = {which: archive[f"logits_{which}"] for which in ("nominal", "odd")}
    rng = np.random.RandomState(settings["image_seed"])  # the legacy generator: the same stream in any numpy
    height, width = settings["odd_size"]
    images = {"nominal": rng.randint(0, 256, (1, settings["size"], settings["size"], 3)).astype(np.uint8),
              "odd": rng.randint(0, 256, (1, height, width, 3)).astype(np.uint8)}
    digest = hashlib.sha256(b"".join(image.tobytes() for image in images.values())).hexdigest()
    assert digest == settings["images_sha256"], f"{npz.name}: the images were not rebuilt as they were made"
    checkpoint = npz.with_suffix(CHECKPOINT_SUFFIXES[settings["framework"]])
    return FrameworkCase(checkpoint, settings, images, logits, committed)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``framework_case``: every fixture of the test module's ``FRAMEWORK`` (paddle_*, mindcv_*),
    committed ones and those in ``$EFFNET_FRAMEWORK_FIXTURES``."""
    if "framework_case" not in metafunc.fixturenames:
        return
    prefix = {"paddle": "paddle_", "mindspore": "mindcv_"}[metafunc.module.FRAMEWORK]
    cases = [(path, True) for path in sorted(FRAMEWORK_FIXTURES.glob(f"{prefix}*.npz"))]
    if os.environ.get(EXTRA_FIXTURES_ENV):
        cases += [(path, False) for path in sorted(Path(os.environ[EXTRA_FIXTURES_ENV]).glob(f"{prefix}*.npz"))]
    ids = [path.stem if committed else f"extra-{path.stem}" for path, committed in cases]
    metafunc.parametrize("framework_case", cases, ids=ids, indirect=True)


@pytest.fixture()
def framework_case(request: pytest.FixtureRequest) -> FrameworkCase:
    return _framework_case(*request.param)
