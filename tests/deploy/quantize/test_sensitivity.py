"""The keep-float choice: the budget, the candidates tried, and the error measure."""

from __future__ import annotations

import numpy as np
import pytest

from effnet.deploy.quantize.graph import Layer
from effnet.deploy.quantize.recipe import AUTO_CANDIDATES
from effnet.deploy.quantize.sensitivity import float_candidates, relative_error, within_float_budget


def test_float_budget_counts_multiply_adds_and_weights() -> None:
    """``keep_float="auto"`` only considers float layers that cost little time and file size:
    a cheap classifier with many weights is as much out of budget as a big early conv."""
    layers = [Layer("stem", "stem 3x3", ["a"], macs=30, weights=1),
              Layer("pw", "expand 1x1", ["b"], macs=960, weights=10),
              Layer("classifier", "classifier", ["c"], macs=10, weights=89)]
    assert within_float_budget(layers[:1], layers)  # 3% of the multiply-adds, 1% of the weights
    assert not within_float_budget(layers[1:2], layers)  # 96% of the multiply-adds
    assert not within_float_budget(layers[2:], layers)  # 89% of the weights
    assert within_float_budget([], layers)


def test_candidates_are_the_most_sensitive_that_fit() -> None:
    # 100 layers of 1% each but one of 10%: auto tries the AUTO_CANDIDATES most sensitive that fit alone
    layers = [Layer(f"l{i}", "conv", [f"n{i}"], macs=1, weights=1, error=float(i)) for i in range(100)]
    layers[98].macs = 12
    order = float_candidates(layers, "auto")
    assert [layer.name for layer in order] == ["l99"] + [f"l{i}" for i in range(97, 98 - AUTO_CANDIDATES, -1)]
    assert len(float_candidates(layers, 7)) == 100  # a number: any layer, budget or not, most sensitive first
    assert float_candidates(layers, 7)[1].name == "l98"


def test_relative_error_is_zero_for_exact_and_one_for_the_mean() -> None:
    expected = np.random.default_rng(0).normal(size=(8, 10))
    assert relative_error(expected, expected) == 0.0
    assert relative_error(np.full_like(expected, expected.mean()), expected) == pytest.approx(1.0)
