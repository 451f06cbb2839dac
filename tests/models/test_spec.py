"""The spec: scaling rules and parameter counts against the reference implementations."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from effnet.models.network import build_model
from effnet.models.spec import ConvLayer, round_channels
from effnet.models.tables import V1_BASE
from effnet.models.variants import VARIANTS, UnknownModelError, canonical_name, resolve


def test_reference_table_covers_every_variant(reference_param_counts: dict[str, dict[str, str]]) -> None:
    assert set(reference_param_counts) == set(VARIANTS)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_param_count_matches_reference(name: str, reference_param_counts: dict[str, dict[str, str]]) -> None:
    row = reference_param_counts[name]
    with torch.device("meta"):
        model = build_model(name)
    counted = sum(p.numel() for p in model.parameters())
    assert abs(counted - int(row["params"])) <= int(row["tolerance"]), row["source"]
    assert resolve(name).num_params() == counted  # the pure-Python count agrees with the module


def test_spec_does_not_import_torch() -> None:
    import subprocess

    code = "import sys; import effnet.models.spec, effnet.models.variants; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("name", ["efficientnet_b0", "efficientnet_lite2", "efficientnet_b0_small",
                                  "efficientnetv2_b0", "efficientnetv2_s"])
def test_blocks_build_exactly_the_anatomy(name: str) -> None:
    """blocks.py builds its modules its own way; the plan's anatomy (which the parameter
    count and every converter read) must name and shape each conv and norm as they are."""
    with torch.device("meta"):
        model = build_model(name)
    plan = model.plan
    for block in plan.blocks:
        module = model.blocks[block.stage][block.index]
        described = set()
        for layer in block.layers():
            if isinstance(layer, ConvLayer):
                conv, norm = getattr(module, layer.conv), getattr(module, layer.norm)
                assert tuple(conv.weight.shape) == (layer.out_channels, layer.in_channels // layer.groups,
                                                    layer.kernel, layer.kernel), (block, layer)
                assert (conv.stride[0], conv.groups, norm.num_features) == (layer.stride, layer.groups,
                                                                            layer.out_channels), (block, layer)
                described |= {f"{layer.conv}.weight", f"{layer.norm}.weight", f"{layer.norm}.bias"}
            else:
                se = getattr(module, layer.name)
                assert tuple(se.conv_reduce.weight.shape[:2]) == (layer.reduced_channels, layer.channels)
                described |= {f"{layer.name}.{conv}.{leaf}" for conv in ("conv_reduce", "conv_expand")
                              for leaf in ("weight", "bias")}
        assert {key for key, _ in module.named_parameters()} == described, block  # nothing left out
    for layer in (plan.stem, plan.head):
        assert tuple(getattr(model, layer.conv).weight.shape) == (layer.out_channels, layer.in_channels, layer.kernel,
                                                                  layer.kernel)
        assert getattr(model, layer.norm).num_features == layer.out_channels


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_plan_knows_every_tensor_before_building(name: str) -> None:
    """``tensor_shapes`` (what weights files are checked against before a module is built) is
    exactly the module's state dict: names, shapes, buffers included."""
    plan = resolve(name, num_classes=7, in_chans=1)
    with torch.device("meta"):
        model = build_model(name, num_classes=7, in_chans=1)
    assert plan.tensor_shapes() == {key: tuple(t.shape) for key, t in model.state_dict().items()}


def test_v1_rounding_adds_a_divisor_when_it_loses_over_ten_percent() -> None:
    # 16 * 1.1 = 17.6 -> 16 (lost 9%, kept); 40 * 0.25 = 10 -> 8 (lost 20%) -> 16 with the bump.
    assert round_channels(16, 1.1) == 16
    assert round_channels(40, 0.25) == 16
    assert round_channels(40, 0.25, round_limit=0.0) == 8  # V2 rule: no bump
    assert round_channels(32, 1.8) == 56  # the paper's example: 57.6 -> 56 (B6 stem)


def test_depth_is_ceil_of_multiplier_times_repeats() -> None:
    plan = resolve("efficientnet_b6")  # depth 2.6: stage 7 has 4 repeats -> ceil(10.4) = 11
    counts = [len(plan.stage_blocks(s)) for s in range(plan.num_stages)]
    assert counts == [math.ceil(2.6 * s.repeats) for s in V1_BASE.stages]
    assert counts[5] == 11


def test_lite_keeps_stem_head_and_outer_stage_depths() -> None:
    plan = resolve("efficientnet_lite4")  # width 1.4, depth 1.8
    assert (plan.stem_channels, plan.head_channels) == (32, 1280)
    counts = [len(plan.stage_blocks(s)) for s in range(plan.num_stages)]
    assert counts[0] == 1 and counts[-1] == 1  # first and last stage not depth-scaled
    assert counts[1:-1] == [math.ceil(1.8 * s.repeats) for s in V1_BASE.stages[1:-1]]
    assert plan.activation == "relu6"
    assert all(b.se_channels == 0 for b in plan.blocks)


def test_b0_small_is_b0_without_squeeze_excitation() -> None:
    small, b0 = resolve("efficientnet_b0_small"), resolve("efficientnet_b0")
    assert all(b.se_channels == 0 for b in small.blocks)
    assert [(b.in_channels, b.out_channels, b.kernel, b.stride) for b in small.blocks] == [
        (b.in_channels, b.out_channels, b.kernel, b.stride) for b in b0.blocks
    ]
    assert small.activation == "silu"


def test_v2_uses_fused_blocks_in_early_stages_and_no_se_there() -> None:
    plan = resolve("efficientnetv2_s")
    kinds = [plan.stage_blocks(s)[0].kind for s in range(plan.num_stages)]
    assert kinds == ["fused", "fused", "fused", "mbconv", "mbconv", "mbconv"]
    assert all(b.se_channels == 0 for b in plan.blocks if b.kind == "fused")
    assert (plan.resolution, plan.eval_resolution) == (300, 384)


def test_stochastic_depth_is_linear_in_block_index() -> None:
    plan = resolve("efficientnet_b0", drop_path_rate=0.2)
    rates = [b.drop_path_rate for b in plan.blocks]
    assert rates == [0.2 * i / len(plan.blocks) for i in range(len(plan.blocks))]


def test_multiplier_overrides_build_a_custom_scale() -> None:
    plan = resolve("efficientnet_b0", width_mult=1.1, depth_mult=1.2, resolution=256)
    b2 = resolve("efficientnet_b2")
    assert [b.out_channels for b in plan.blocks] == [b.out_channels for b in b2.blocks]
    assert plan.resolution == 256


@pytest.mark.parametrize("alias", ["b0", "efficientnet-b0", "EfficientNet_B0", "efficientnet_b0"])
def test_aliases_reach_the_canonical_name(alias: str) -> None:
    assert canonical_name(alias) == "efficientnet_b0"


@pytest.mark.parametrize(
    "typed,suggested",
    [
        ("v2b0", ["efficientnetv2_b0", "efficientnetv2_b3", "efficientnetv2_b2"]),  # was efficientnetv2_b0 twice
        ("b99", ["efficientnet_b8", "efficientnet_b7", "efficientnet_b6"]),  # was nothing: too short for difflib
        ("lite9", ["efficientnet_lite4", "efficientnet_lite3", "efficientnet_lite2"]),
        ("efficientnet-b10", ["efficientnet_b1", "efficientnet_b0", "efficientnetv2_b1"]),
        ("nope", []),
    ],
)
def test_unknown_model_suggests_close_names_once(typed: str, suggested: list[str]) -> None:
    """Issue 14: ``--model v2b0`` suggested efficientnetv2_b0 twice; ``b99`` suggested nothing."""
    with pytest.raises(UnknownModelError) as error:
        canonical_name(typed)
    hint = f" Did you mean {', '.join(suggested)}?" if suggested else ""
    assert str(error.value).startswith(f"unknown model '{typed}'.{hint} Valid models: efficientnet_b0, ")


def test_unknown_model_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError) as error:
        canonical_name("efficientnet_b9")
    assert "efficientnet_b8" in str(error.value) and "efficientnetv2_xl" in str(error.value)
