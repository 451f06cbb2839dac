"""Parameter counts of every variant against live reference implementations.

test_spec.py checks the counts against the numbers written in issue 3; here the
references themselves are built (on the meta device where they allow it, so nothing is
allocated) and counted: efficientnet_pytorch for B0-B8 and L2, geffnet for Lite0-4, and
keras.applications for V2 (B0 and S are counted inside the Keras parity tests).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from effnet.models.network import build_model
from effnet.models.variants import resolve


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("variant", [f"b{i}" for i in range(9)] + ["l2"])
def test_efficientnet_pytorch(variant: str) -> None:
    from efficientnet_pytorch import EfficientNet

    with torch.device("meta"):
        reference = EfficientNet.from_name(f"efficientnet-{variant}", image_size=None)
        ours = build_model(f"efficientnet_{variant}")
    assert count(reference) == count(ours) == resolve(f"efficientnet_{variant}").num_params()


@pytest.mark.parametrize("index", range(5))
def test_geffnet_lite(index: int) -> None:
    import geffnet

    with torch.device("meta"):
        reference = geffnet.create_model(f"tf_efficientnet_lite{index}")
    assert count(reference) == resolve(f"efficientnet_lite{index}").num_params()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,arch",
    [("EfficientNetV2B1", "efficientnetv2_b1"), ("EfficientNetV2B2", "efficientnetv2_b2"),
     ("EfficientNetV2B3", "efficientnetv2_b3"), ("EfficientNetV2M", "efficientnetv2_m"),
     ("EfficientNetV2L", "efficientnetv2_l")],
)
def test_keras_v2(name: str, arch: str) -> None:
    """Trainable weights only: Keras's count_params() also counts BatchNorm moving statistics."""
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3))
    assert int(sum(np.prod(w.shape) for w in model.trainable_weights)) == resolve(arch).num_params()
