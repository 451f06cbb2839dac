"""One timed configuration (model x runner x batch size x threads), its rounds and its result.

Every configuration is prepared once and timed in rounds through ``runtime.timing.time_calls``
(the one timing loop); the rounds of all configurations are interleaved and their samples
pooled (``Timing.extend``), so load from other processes on a shared machine hits every
configuration alike instead of one of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ...models.variants import short_name
from ...runtime.timing import Timing, time_calls
from .runners import RUNNERS, Forward, InputFiles


@dataclass(frozen=True)
class TimingSettings:
    """How long each configuration is timed per round: ``warmup`` untimed calls after the
    first, then timed calls until ``budget`` seconds passed and ``min_repeats`` ran."""

    budget: float = 2.0
    warmup: int = 3
    min_repeats: int = 5


@dataclass(frozen=True)
class Configuration:
    """What one row of the table measures (``threads`` None: the engine's own default)."""

    model: str
    runner: str
    batch_size: int
    threads: int | None = None

    def describe(self) -> str:
        return f"{short_name(self.model)} {self.runner} bs{self.batch_size} {self.threads or 'default'} threads"


@dataclass
class BenchResult:
    model: str
    backend: str
    batch_size: int
    threads: int
    size: int
    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float
    repeats: int
    first_call: float
    top1: float | None = None
    #: The first backend of the run at the same model, batch and threads, and its p50 over ours.
    baseline: str | None = None
    speedup: float | None = None
    #: The share of the run's photos on which this backend's top-1 is torch fp32's (None: not compared).
    agreement: float | None = None

    @classmethod
    def from_timing(cls, configuration: Configuration, size: int, threads: int, timing: Timing,
                    top1: float | None = None, agreement: float | None = None) -> "BenchResult":
        """Percentiles of the per-batch times; throughput is images over the mean batch time."""
        batch_size = configuration.batch_size
        return cls(configuration.model, configuration.runner, batch_size, threads, size, timing.p50,
                   timing.percentile(90), timing.percentile(99), timing.mean, batch_size / timing.mean,
                   len(timing.samples), timing.first_call, top1, agreement=agreement)

    def row(self) -> dict[str, Any]:
        """Flat, unit-suffixed record for CSV/JSON."""
        return {
            "model": self.model, "backend": self.backend, "batch_size": self.batch_size, "threads": self.threads,
            "size": self.size, "p50_ms": round(self.p50 * 1e3, 3), "p90_ms": round(self.p90 * 1e3, 3),
            "p99_ms": round(self.p99 * 1e3, 3), "mean_ms": round(self.mean * 1e3, 3),
            "throughput_img_s": round(self.throughput, 2), "repeats": self.repeats,
            "first_call_s": round(self.first_call, 3), "top1": self.top1,
            "top1_agreement": None if self.agreement is None else round(self.agreement, 4), "baseline": self.baseline,
            "speedup": None if self.speedup is None else round(self.speedup, 3),
        }


@contextlib.contextmanager
def thread_scope(threads: int | None) -> Iterator[int]:
    """Run with ``threads`` torch intra-op threads (None: torch's default), restoring them
    afterwards; yields the count in effect. torch's setting is process-wide, so each round of
    each configuration sets its own."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@dataclass
class Trial:
    """A prepared configuration; ``add_round`` times it again and pools the samples."""

    configuration: Configuration
    size: int
    forward: Forward
    top1: float | None = None
    timing: Timing = field(default_factory=Timing)
    #: the thread count in effect while timing (the resolved default when none was asked for)
    threads: int = 0

    @classmethod
    def prepare(cls, configuration: Configuration, net: Any, size: int, files: InputFiles | None = None,
                top1: float | None = None) -> "Trial":
        with thread_scope(configuration.threads):
            forward = RUNNERS[configuration.runner].prepare(net, configuration.batch_size, size,
                                                            threads=configuration.threads, files=files)
        return cls(configuration, size, forward, top1)

    def add_round(self, settings: TimingSettings) -> None:
        with thread_scope(self.configuration.threads) as threads:
            self.timing.extend(time_calls(self.forward, warmup=settings.warmup, budget=settings.budget,
                                          min_repeats=settings.min_repeats))
        self.threads = threads

    def result(self, agreement: float | None = None) -> BenchResult:
        """The pooled timing as a result; ``agreement``: the backend's top-1 agreement with torch fp32."""
        return BenchResult.from_timing(self.configuration, self.size, self.threads, self.timing, self.top1, agreement)


def with_speedups(results: Sequence[BenchResult], baseline: str | None) -> list[BenchResult]:
    """Each result with ``baseline``'s p50 over its own (same model, batch size and threads)."""
    if baseline is None:
        return list(results)
    reference = {(r.model, r.batch_size, r.threads): r.p50 for r in results if r.backend == baseline}
    return [replace(r, baseline=baseline, speedup=reference[key] / r.p50 if (key := (r.model, r.batch_size, r.threads))
                    in reference else None) for r in results]
