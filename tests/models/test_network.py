"""The module: padding conventions, train/eval behaviour, features, heads, checkpointing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from effnet.models.layers import Conv2dSame, Conv2dStaticSame, DropPath, create_conv2d
from effnet.models.network import build_model
from effnet.models.spec import Padding
from effnet.models.variants import resolve


def _tf_same_reference(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """TF "SAME" from its definition: out = ceil(in / stride), extra pixel at bottom/right."""
    pads = []
    for size, k, s in zip(x.shape[-2:], conv.kernel_size, conv.stride):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.conv2d(F.pad(x, [left, right, top, bottom]), conv.weight, None, conv.stride, 0, 1, conv.groups)


@pytest.mark.parametrize("size", [(224, 224), (225, 261), (31, 17), (1, 1)])
@pytest.mark.parametrize("kernel,stride", [(3, 2), (5, 2), (3, 1), (5, 1)])
def test_tf_same_padding_matches_definition_for_any_size(size: tuple[int, int], kernel: int, stride: int) -> None:
    conv = create_conv2d(4, 4, kernel, stride, groups=4, padding=Padding.TF_SAME)
    x = torch.randn(1, 4, *size)
    expected = _tf_same_reference(x, conv)
    assert conv(x).shape == expected.shape
    torch.testing.assert_close(conv(x), expected)
    assert isinstance(conv, Conv2dSame) == (stride > 1)


def _static_same_reference(x: torch.Tensor, conv: torch.nn.Conv2d, nominal: int) -> torch.Tensor:
    """PaddleClas's "SAME" from its definition: TF's (top, bottom) computed once at ``nominal``;
    where they differ it pads ``top + stride`` on both sides and drops the first output row and
    column (``ppcls/arch/backbone/model_zoo/efficientnet.py``, ``Conv2ds``)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    total = max((-(-nominal // s) - 1) * s + k - nominal, 0)
    top, bottom = total // 2, total - total // 2
    if top == bottom:
        return F.conv2d(F.pad(x, [top] * 4), conv.weight, None, s, 0, 1, conv.groups)
    return F.conv2d(F.pad(x, [top + s] * 4), conv.weight, None, s, 0, 1, conv.groups)[:, :, 1:, 1:]


@pytest.mark.parametrize("nominal", [224, 112, 15, 7])
@pytest.mark.parametrize("size", [224, 225, 226, 15, 16, 7])
@pytest.mark.parametrize("kernel", [3, 5])
def test_static_same_padding_is_paddleclas_same(nominal: int, size: int, kernel: int) -> None:
    """Frozen at ``nominal``: equal to TF "SAME" at inputs of the nominal parity, and to
    PaddleClas's pad-and-crop at every input, with TF's output shape ``ceil(size / 2)``."""
    conv = create_conv2d(4, 4, kernel, 2, groups=4, padding=Padding.TF_SAME_STATIC, input_size=nominal)
    assert isinstance(conv, Conv2dStaticSame)
    x = torch.randn(1, 4, size, size)
    with torch.no_grad():
        actual = conv(x)
        assert actual.shape[-1] == -(-size // 2)
        torch.testing.assert_close(actual, _static_same_reference(x, conv, nominal))
        if size % 2 == nominal % 2:
            torch.testing.assert_close(actual, _tf_same_reference(x, conv))


def test_static_same_needs_the_nominal_size_of_a_strided_conv() -> None:
    assert type(create_conv2d(4, 4, 3, 1, padding=Padding.TF_SAME_STATIC)) is torch.nn.Conv2d  # symmetric
    with pytest.raises(ValueError, match="nominal input size"):
        create_conv2d(4, 4, 3, 2, padding=Padding.TF_SAME_STATIC)


@pytest.mark.parametrize("name,strided_inputs", [
    # PaddleClas's ``inp_shape`` table, the input side of each stage: b0 [224, 112, 112, 56, 28, 14, 14, 7],
    # b3 [300, 150, 150, 75, 38, 19, 19, 10]; the stem and stages 2, 3, 4 and 6 are strided.
    ("efficientnet_b0", [224, 112, 56, 28, 14]),
    ("efficientnet_b3", [300, 150, 75, 38, 19]),
])
def test_static_same_freezes_each_strided_conv_at_its_nominal_input(name: str, strided_inputs: list[int]) -> None:
    with torch.device("meta"):
        model = build_model(name, padding=Padding.TF_SAME_STATIC)
    frozen = [m.input_size for m in model.modules() if isinstance(m, Conv2dStaticSame)]
    assert frozen == strided_inputs
    assert [b.input_size for b in resolve(name).blocks if b.stride > 1] == strided_inputs[1:]


def test_static_same_equals_tf_same_at_sizes_of_the_nominal_parity_only() -> None:
    static = build_model("efficientnet_b0", padding="tf_same_static", width_mult=0.25, depth_mult=0.25).eval()
    dynamic = build_model("efficientnet_b0", padding="tf_same", width_mult=0.25, depth_mult=0.25).eval()
    dynamic.load_state_dict(static.state_dict())
    with torch.no_grad():
        for size, equal in ((224, True), (256, True), (225, False), (240, False)):
            x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
            assert torch.equal(static(x), dynamic(x)) == equal, size


def test_tf_same_differs_from_symmetric_on_even_inputs() -> None:
    same = create_conv2d(3, 8, 3, 2, padding=Padding.TF_SAME)
    symmetric = create_conv2d(3, 8, 3, 2)
    symmetric.load_state_dict(same.state_dict())
    x = torch.randn(1, 3, 8, 8)
    assert same(x).shape == symmetric(x).shape
    assert not torch.allclose(same(x), symmetric(x))


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite0", "efficientnetv2_b0"])
@pytest.mark.parametrize("padding", ["symmetric", "tf_same", "tf_same_static"])
def test_odd_and_non_square_inputs(name: str, padding: str) -> None:
    model = build_model(name, padding=padding, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 65, 97)).shape == (2, 7)


def test_eval_is_deterministic_and_training_is_stochastic() -> None:
    model = build_model("efficientnet_b0", num_classes=10, drop_path_rate=0.5, width_mult=0.25, depth_mult=0.25)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    model.train()
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    second = model(x)
    assert not torch.allclose(first, second)


def test_drop_path_keeps_expectation_and_is_identity_in_eval() -> None:
    layer = DropPath(0.25)
    x = torch.ones(20000, 1)
    layer.train()
    out = layer(x)
    torch.testing.assert_close(out.unique(), torch.tensor([0.0, 1.0 / 0.75]))
    assert abs(out.mean().item() - 1.0) < 0.02
    layer.eval()
    assert torch.equal(layer(x), x)


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite2", "efficientnetv2_s", "efficientnetv2_m"])
def test_features_only_gives_strides_2_to_32(name: str) -> None:
    model = build_model(name, features_only=True).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert [64 // f.shape[-1] for f in features] == [2, 4, 8, 16, 32]
    assert [f.shape[1] for f in features] == [info["channels"] for info in model.feature_info]
    assert not hasattr(model, "classifier")


def test_forward_head_pre_logits_and_reset_classifier() -> None:
    model = build_model("efficientnet_lite0").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        embedding = model.forward_head(model.forward_features(x), pre_logits=True)
        assert embedding.shape == (2, 1280)
        model.reset_classifier(5, global_pool="avgmax")
        assert model(x).shape == (2, 5)
        model.reset_classifier(0)
        assert model(x).shape == (2, 1280)


def test_unknown_global_pool_is_rejected() -> None:
    with pytest.raises(ValueError, match="global_pool"):
        build_model("efficientnet_b0", global_pool="median")


def test_grad_checkpointing_gives_identical_gradients() -> None:
    torch.manual_seed(0)
    model = build_model("efficientnet_b0", num_classes=3, drop_path_rate=0.0, drop_rate=0.0,
                        width_mult=0.5, depth_mult=0.5)
    model.train()
    x = torch.randn(2, 3, 32, 32)
    model(x).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(a, p.grad)


def test_in_chans_and_bn_eps_are_honoured() -> None:
    model = build_model("efficientnet_lite0", in_chans=1, bn_eps=1e-3)
    assert model.conv_stem.in_channels == 1
    assert all(m.eps == 1e-3 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_timm_attribute_names() -> None:
    keys = build_model("efficientnet_b0").state_dict().keys()
    for key in ("conv_stem.weight", "bn1.running_var", "blocks.0.0.conv_dw.weight", "blocks.0.0.se.conv_reduce.bias",
                "blocks.0.0.conv_pw.weight", "blocks.1.0.conv_pw.weight", "blocks.1.0.bn3.weight",
                "blocks.6.0.conv_pwl.weight", "conv_head.weight", "bn2.weight", "classifier.bias"):
        assert key in keys, key
    v2 = build_model("efficientnetv2_s").state_dict().keys()
    assert "blocks.0.0.conv.weight" in v2 and "blocks.1.0.conv_exp.weight" in v2
