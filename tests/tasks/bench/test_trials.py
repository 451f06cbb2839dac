"""Trials: the shared timing loop's settings honoured, rounds pooled, statistics as numpy computes them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effnet.runtime.timing import Timing
from effnet.tasks.bench.trials import BenchResult, Configuration, TimingSettings, Trial, thread_scope, with_speedups


def test_rounds_honour_the_budget_and_minimum_and_pool_their_samples() -> None:
    calls = []
    trial = Trial(Configuration("efficientnet_lite0", "torch", 1, threads=1), 64, lambda: calls.append(1))
    settings = TimingSettings(budget=0.05, warmup=2, min_repeats=3)
    trial.add_round(settings)
    first_round = len(trial.timing.samples)
    trial.add_round(settings)
    assert first_round >= 3 and len(trial.timing.samples) >= first_round + 3
    # per round: one first call (timed apart), the warm-up, then the timed calls
    assert len(calls) == 2 * (1 + 2) + len(trial.timing.samples)
    assert trial.result().repeats == len(trial.timing.samples) and trial.threads == 1


def test_percentiles_follow_numpy() -> None:
    samples = [0.01 * i for i in range(1, 101)]
    result = BenchResult.from_timing(Configuration("m", "torch", 4), 64, 1, Timing(samples, 0.5))
    assert (result.p50, result.p90, result.p99) == pytest.approx(tuple(np.percentile(samples, [50, 90, 99])))
    assert result.throughput == pytest.approx(4 / np.mean(samples)) and result.first_call == 0.5


def test_thread_scope_restores_torch_threads() -> None:
    before = torch.get_num_threads()
    with thread_scope(1) as inside:
        assert inside == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with thread_scope(None) as inside:
        assert inside == before


def test_speedups_are_the_baselines_p50_over_each_rows() -> None:
    def result(backend: str, p50: float, batch: int = 1) -> BenchResult:
        return BenchResult("m", backend, batch, 2, 64, p50, p50, p50, p50, batch / p50, 5, 0.1)

    rows = with_speedups([result("torch", 0.02), result("onnx", 0.005), result("onnx", 0.01, batch=8)], "torch")
    assert [r.speedup for r in rows] == [1.0, 4.0, None]  # no torch row at batch 8
    assert {r.baseline for r in rows} == {"torch"}
