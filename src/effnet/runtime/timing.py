"""The one timing loop: warm up, then time calls until a budget is spent.

``effnet bench``, ``effnet quantize``'s speed report and ``effnet scale --target-latency``
all time through here, so their numbers mean the same thing. Several configurations are
compared fairly on a shared machine by timing them in interleaved rounds and pooling the
samples (load from other processes then hits all of them alike); callers do the rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Timing:
    """Seconds per call after warm-up, and the first call (compilation, lazy init) apart."""

    samples: list[float] = field(default_factory=list)
    first_call: float = 0.0

    def extend(self, other: "Timing") -> None:
        """Pool another round's samples (the first call is the first round's)."""
        if not self.samples:
            self.first_call = other.first_call
        self.samples += other.samples

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q))

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def mean(self) -> float:
        return float(np.mean(self.samples))


def time_calls(run: Callable[[], object], *, warmup: int = 3, budget: float = 2.0, min_repeats: int = 5) -> Timing:
    """Call ``run`` once (timed apart), ``warmup`` more times, then until ``budget`` seconds
    have passed and at least ``min_repeats`` calls were timed (``budget=0``: exactly that many)."""
    start = time.perf_counter()
    run()
    first_call = time.perf_counter() - start
    for _ in range(warmup):
        run()
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while len(samples) < min_repeats or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return Timing(samples, first_call)
