"""Compound scaling against the EfficientNet paper (Tan & Le 2019, section 3.3 and Table 2 via variants.py)."""

from __future__ import annotations

import pytest

import effnet
from effnet.cli import main
from effnet.errors import UsageError
from effnet.models.spec import resolve
from effnet.models.variants import VARIANTS
from effnet.tasks.info import count_macs
from effnet.tasks.scale import ALPHA, BETA, GAMMA, largest_phi, nearest_variant, parse_flops, parse_latency, scale


def test_paper_constants() -> None:
    """alpha (depth) 1.2, beta (width) 1.1, gamma (resolution) 1.15, alpha*beta^2*gamma^2 ~= 2."""
    assert (ALPHA, BETA, GAMMA) == (1.2, 1.1, 1.15)
    assert ALPHA * BETA**2 * GAMMA**2 == pytest.approx(2.0, abs=0.1)


def test_phi_zero_is_b0() -> None:
    scaled = scale("efficientnet_b0", 0.0)
    assert (scaled.width, scaled.depth, scaled.resolution) == (1.0, 1.0, 224)
    assert scaled.plan.blocks == resolve("efficientnet_b0").blocks
    assert nearest_variant(scaled) == "efficientnet_b0"


def test_phi_one_matches_the_paper_constants_and_b2() -> None:
    """phi=1 gives width beta=1.1 and depth alpha=1.2: exactly B2's published multipliers."""
    scaled = scale("efficientnet_b0", 1.0)
    assert scaled.width == pytest.approx(BETA) and scaled.depth == pytest.approx(ALPHA)
    b2 = VARIANTS["efficientnet_b2"]
    assert (scaled.width, scaled.depth) == pytest.approx((b2.width, b2.depth))
    assert scaled.resolution == 256  # 224 * 1.15 = 257.6, to a multiple of 8
    assert scaled.plan.num_params() == resolve("efficientnet_b2").num_params()
    assert nearest_variant(scaled) == "efficientnet_b2"


def test_constants_and_base_are_configurable() -> None:
    flat = scale("efficientnet_b0", 3.0, alpha=1.0, beta=1.0, gamma=1.0)
    assert (flat.width, flat.depth, flat.resolution) == (1.0, 1.0, 224)
    lite = scale("lite0", 2.0)
    assert lite.plan.family == "efficientnet_lite" and lite.plan.stem_channels == 32  # Lite keeps its stem
    assert nearest_variant(lite).startswith("efficientnet_lite")


def test_printed_create_call_builds_the_scaled_model() -> None:
    scaled = scale("efficientnet_b0", 0.5)
    model = eval(scaled.create_call(), {"effnet": effnet})  # the line the command prints
    assert model.plan.blocks == scaled.plan.blocks
    assert sum(p.numel() for p in model.parameters()) == scaled.plan.num_params()


def test_bisection_finds_the_largest_fitting_phi() -> None:
    assert largest_phi(lambda phi: phi <= 3.3) == pytest.approx(3.3, abs=0.01)
    assert largest_phi(lambda phi: phi <= 3.3) <= 3.3
    with pytest.raises(UsageError, match=r"over the target; set a larger target, a smaller --base .* --backend"):
        largest_phi(lambda phi: False)


def test_target_flops_is_met_and_tight() -> None:
    limit = 1e9
    fits = lambda phi: count_macs(scale("efficientnet_b0", phi).plan) <= limit  # noqa: E731
    phi = largest_phi(fits, tolerance=0.02)
    assert fits(phi) and not fits(phi + 0.02)


def test_target_parsing() -> None:
    assert parse_flops("2G") == 2e9 and parse_flops("500M") == 5e8 and parse_flops("2e9") == 2e9
    assert parse_latency("20ms") == pytest.approx(0.02) and parse_latency("0.5s") == 0.5
    with pytest.raises(UsageError):
        parse_flops("lots")


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scale", "--phi", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "x1.5774" in out and "x1.2691" in out  # 1.2^2.5 depth, 1.1^2.5 width
    assert 'create_model("efficientnet_b0", width_mult=1.2691, depth_mult=1.5774, resolution=320)' in out
    # the printed train overrides load into a real recipe and mean the same model
    from effnet.tasks.training.config import load_config

    overrides = out.split("effnet train --config RECIPE.yaml ")[1].split("\n")[0].split()
    config = load_config("digits_finetune_lite0", overrides)
    assert (config.model.name, config.model.width_mult, config.model.depth_mult, config.data.image_size) == (
        "efficientnet_b0", 1.2691, 1.5774, 320)
    assert main(["scale", "--phi", "1", "--alpha", "0.9"]) == 2


@pytest.mark.slow
def test_target_latency_measures_candidates(capsys: pytest.CaptureFixture[str]) -> None:
    from effnet.tasks.bench import BenchConfig, measure_plan

    config = BenchConfig(batch_size=1, threads=1, budget=0.2)
    base = measure_plan(scale("lite0", 0.0).plan, config).p50
    target = f"{base * 3 * 1e3:.1f}ms"  # three times the base: phi lands around 1-2
    assert main(["scale", "--base", "lite0", "--target-latency", target, "--budget", "0.2", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    phi = float(out.split("phi = ")[1].split()[0])
    assert 0.0 < phi < 4.0
