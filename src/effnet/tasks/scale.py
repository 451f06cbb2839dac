"""``effnet scale``: the EfficientNet paper's compound scaling as a tool.

Tan & Le (2019), section 3.3: depth ``d = alpha^phi``, width ``w = beta^phi``, resolution
``r = gamma^phi`` with ``alpha * beta^2 * gamma^2 ~= 2`` so that FLOPs grow by about ``2^phi``;
their grid search on B0 found alpha=1.2 (depth), beta=1.1 (width), gamma=1.15 (resolution).
(Width gets the smaller constant: FLOPs grow with its square, like resolution's.) phi=1 gives
exactly B2's published width 1.1 and depth 1.2.

The derived model is the base variant with overridden multipliers, built through the same
``plan_network`` as every named variant, so it is created by
``create_model(base, width_mult=..., depth_mult=..., resolution=...)`` and trained with the
same recipes. Targets (``--target-flops``, ``--target-latency``) are met by bisection on phi.

Latency is measured on an engine of ``runtime.ENGINES`` opened on a module built from the
candidate's plan, through the one timing loop (``runtime.timing``); each candidate is timed in
rounds alternating with the base model, so a burst of load from other processes cannot
decide the search (``LatencyProbe``).
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import UsageError
from ..models.counting import count_macs
from ..models.spec import NetworkPlan, plan_network
from ..models.variants import VARIANTS, get_variant, resolve
from ..options import add_options
from ..runtime import AUTO, auto_choice, open_engine, resolve_engine
from ..runtime.timing import time_calls

DESCRIPTION = (
    "Compound scaling (Tan & Le 2019): derive width = beta^phi, depth = alpha^phi, resolution = gamma^phi "
    "from a base variant, report params/FLOPs and the nearest named variant, or find the largest phi "
    "that fits a FLOPs or latency target."
)

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
MAX_PHI = 12.0
#: Engines --target-latency can time candidates on (it builds each candidate as a module).
SCALE_ENGINES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Scaled:
    """A compound-scaled model: its multipliers relative to ``base`` and its plan."""

    base: str
    phi: float
    width: float
    depth: float
    resolution: int
    plan: NetworkPlan

    def create_call(self) -> str:
        return (f'effnet.create_model("{self.base}", width_mult={self.width:.4f}, '
                f"depth_mult={self.depth:.4f}, resolution={self.resolution})")

    def train_overrides(self) -> str:
        return (f"model.name={self.base} model.width_mult={self.width:.4f} "
                f"model.depth_mult={self.depth:.4f} data.image_size={self.resolution}")


def round_resolution(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def scale(base: str = "efficientnet_b0", phi: float = 1.0, alpha: float = ALPHA, beta: float = BETA,
          gamma: float = GAMMA, round_to: int = 8) -> Scaled:
    """Multipliers and plan for ``phi`` from ``base`` (whose own multipliers are the starting point)."""
    name, variant = get_variant(base)
    width = variant.width * beta**phi
    depth = variant.depth * alpha**phi
    resolution = round_resolution(variant.test_resolution * gamma**phi, round_to)
    plan = plan_network(name, variant, width_mult=width, depth_mult=depth, resolution=resolution)
    return Scaled(name, phi, width, depth, resolution, plan)


class Nearest(NamedTuple):
    """A named variant and its multiply-adds at its eval resolution."""

    name: str
    macs: int


def nearest_variant(scaled: Scaled, macs: int | None = None) -> Nearest:
    """The named variant of the same family closest to ``scaled`` in multiply-adds and input
    size (``macs``: the scaled model's, when already counted).

    The distance is Euclidean in log MACs and twice log resolution (MACs grow with its
    square). Every member of the family is a candidate, including those with their own stage
    tables (V2-S/M/L/XL), whose multipliers (all 1.0) say nothing about their size: so MACs
    are counted, not inferred from multipliers. Counting takes up to a second per model, so
    candidates are visited nearest resolution first, and the search stops once the resolution
    term alone is farther than the best match found.
    """
    family = get_variant(scaled.base)[1].family
    own_macs = math.log(macs or count_macs(scaled.plan))
    candidates = sorted((abs(2 * math.log(variant.test_resolution / scaled.resolution)), name)
                        for name, variant in VARIANTS.items() if variant.family is family)
    best, best_distance = Nearest(scaled.base, 0), math.inf
    for resolution_distance, name in candidates:
        if resolution_distance >= best_distance:
            break
        candidate_macs = count_macs(resolve(name))
        distance = math.hypot(math.log(candidate_macs) - own_macs, resolution_distance)
        if distance < best_distance:
            best, best_distance = Nearest(name, candidate_macs), distance
    return best


def largest_phi(fits: Callable[[float], bool], tolerance: float = 0.01) -> float:
    """The largest phi in [0, MAX_PHI] for which ``fits`` holds, assuming it is monotone."""
    if not fits(0.0):
        raise UsageError("the base model itself (phi=0, measured above) is over the target; set a larger target, "
                         "a smaller --base (e.g. lite0) or, for latency, a faster --engine (e.g. onnxruntime)")
    low, high = 0.0, 1.0
    while fits(high):
        low, high = high, high * 2
        if high > MAX_PHI:
            return MAX_PHI if fits(MAX_PHI) else low
    while high - low > tolerance:
        middle = (low + high) / 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def parse_flops(text: str) -> float:
    """``2G``, ``500M``, ``2e9`` -> multiply-adds."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?)(?:macs?|flops?)?\s*", text.lower())
    if not match:
        raise UsageError(f"cannot read FLOPs target '{text}'; write e.g. 2G, 500M or 2e9 (multiply-adds)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_latency(text: str) -> float:
    """``20ms``, ``0.02s``, ``20`` (ms) -> seconds."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*(s|ms|us)?\s*", text.lower())
    if not match:
        raise UsageError(f"cannot read latency target '{text}'; write e.g. 20ms or 0.5s")
    return float(match.group(1)) * _TIME_UNITS[match.group(2) or "ms"]


Forward = Callable[[], object]


class PlanEngines:
    """Engines on random-weight modules built from plans (latency does not depend on the
    weights' values), each called on one batch-1 input: the torch engine on the module
    (channels_last, as ``effnet predict`` runs it), onnxruntime on its ``deploy.export`` file
    (which takes seconds per candidate)."""

    def __init__(self, engine: str, folder: Path, device: str | None = None, threads: int | None = None) -> None:
        self.engine, self.folder, self.device, self.threads = engine, folder, device, threads
        self.opened = 0

    def forward(self, plan: NetworkPlan) -> Forward:
        import numpy as np
        import torch

        from ..models.network import EfficientNet

        torch.manual_seed(0)
        net = EfficientNet(plan).eval()
        size = plan.eval_resolution
        self.opened += 1
        if self.engine == "onnxruntime":
            from ..deploy.export.onnx import export_network  # onnx: only when exporting

            exported = export_network(net, self.folder / f"candidate-{self.opened}.onnx", batch=None, size=size)
            engine = open_engine("onnxruntime", None, str(exported.path), device=self.device, threads=self.threads)
        else:
            engine = _torch_engine(net, self.device or "cpu", self.threads)
        batch = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
        return lambda: engine(batch)


class Estimate(NamedTuple):
    """A candidate's latency: ``ratio`` (its p50 over the base's, median of the rounds) times
    ``base`` (the median of every base p50 so far)."""

    latency: float
    ratio: float
    base: float


@dataclass
class LatencyProbe:
    """Batch-1 p50 latency of candidates, robust to load from other processes.

    One measurement per candidate let a burst of load decide the search (phi 1 once measured
    1740 ms and phi 2 235 ms). Here each candidate is timed in ``rounds`` rounds, alternating
    with the base model; each round gives the candidate's p50 over the base's p50 measured
    right beside it, so load that comes and goes hits both alike. The estimate is the median
    ratio times the median of every base p50 measured so far: one disturbed round moves
    neither median. ``budget`` seconds of timing per candidate and round, as ``effnet bench
    --budget`` means per configuration and round; the base is timed as long again beside it.
    """

    open_forward: Callable[[NetworkPlan], Forward]
    base: NetworkPlan
    rounds: int = 3
    budget: float = 0.2
    base_p50s: list[float] = field(default_factory=list)
    _base_forward: Forward | None = field(default=None, init=False, repr=False)

    def measure(self, plan: NetworkPlan) -> Estimate:
        if self._base_forward is None:
            self._base_forward = self.open_forward(self.base)
        candidate = self._base_forward if plan == self.base else self.open_forward(plan)
        ratios = []
        for round_index in range(self.rounds):
            warmup = 3 if round_index == 0 else 0  # later rounds: the first call (untimed) is warm-up enough
            base = time_calls(self._base_forward, warmup=warmup, budget=self.budget, min_repeats=3).p50
            own = time_calls(candidate, warmup=warmup, budget=self.budget, min_repeats=3).p50
            self.base_p50s.append(base)
            ratios.append(own / base)
        ratio, base_p50 = statistics.median(ratios), statistics.median(self.base_p50s)
        return Estimate(ratio * base_p50, ratio, base_p50)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--phi", type=float, help="compound coefficient (default: 1.0 when no target is given)")
    target.add_argument("--target-flops", metavar="MACS", help="largest phi with at most this many multiply-adds, e.g. 2G")
    target.add_argument("--target-latency", metavar="TIME", help="largest phi whose measured batch-1 p50 latency fits, e.g. 20ms")
    parser.add_argument("--base", default="efficientnet_b0", metavar="NAME", help="variant to scale from")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="depth base; the default is the paper's")
    parser.add_argument("--beta", type=float, default=BETA, help="width base; the default is the paper's")
    parser.add_argument("--gamma", type=float, default=GAMMA, help="resolution base; the default is the paper's")
    parser.add_argument("--round-to", type=int, default=8, metavar="PIXELS",
                        help="round the resolution to a multiple of this (8 keeps stride-2 maps even)")
    latency = parser.add_argument_group("with --target-latency")
    add_options(latency, "engine", "device", "threads", engine={
        "help": "engine the candidates run on: torch (channels_last, as --engine torch runs it) or onnxruntime "
                "(exports every candidate, so each takes seconds longer); auto: onnxruntime on a CPU, as predict "
                "runs by default"})
    latency.add_argument("--budget", type=float, default=0.2, metavar="SECONDS",
                         help="seconds of timing per candidate and round, as in effnet bench (the base is timed as "
                              "long again beside it; before 0.4.1 this was per candidate, split over its rounds)")
    latency.add_argument("--rounds", type=int, default=3, metavar="N",
                         help="rounds per candidate, each timing it right after the base; the median ratio decides")


def _torch_engine(net: Any, device: str, threads: int | None) -> Any:
    """``net`` behind the torch engine (channels_last, as predict runs it)."""
    from ..runtime.torch_engine import TorchEngine

    return TorchEngine.from_module(net, device, threads)


def _latency_fits(probe: LatencyProbe, at: Callable[[float], Scaled], seconds: float) -> Callable[[float], bool]:
    def fits(phi: float) -> bool:
        scaled = at(phi)
        estimate = probe.measure(scaled.plan)
        print(f"  phi {phi:.3f}: {scaled.resolution} px, p50 {estimate.latency * 1e3:.1f} ms "
              f"({estimate.ratio:.2f}x the base's {estimate.base * 1e3:.1f} ms, median of {probe.rounds} rounds)",
              file=sys.stderr)
        return estimate.latency <= seconds

    return fits


def run(args: argparse.Namespace) -> int:
    if min(args.alpha, args.beta, args.gamma) < 1.0:
        raise UsageError("alpha, beta and gamma must be >= 1 (the paper's constraint)")
    if args.round_to < 1:
        raise UsageError("--round-to must be a positive integer")
    if args.budget <= 0:
        raise UsageError(f"--budget must be > 0, not {args.budget:g}")
    if args.rounds < 1:
        raise UsageError(f"--rounds must be at least 1, not {args.rounds}")
    get_variant(args.base)

    def at(phi: float) -> Scaled:
        return scale(args.base, phi, args.alpha, args.beta, args.gamma, args.round_to)

    goal = ""
    if args.target_flops:
        limit = parse_flops(args.target_flops)
        def fits(phi: float) -> bool:
            macs = count_macs(at(phi).plan)
            print(f"  phi {phi:.3f}: {macs / 1e9:.3f} G MACs", file=sys.stderr)
            return macs <= limit

        phi = largest_phi(fits)
        goal = f"largest phi with FLOPs <= {limit / 1e9:g} G MACs"
    elif args.target_latency:
        limit = parse_latency(args.target_latency)
        engine = resolve_engine(args.engine, None)
        engine = auto_choice(args.device) if engine == AUTO else engine
        if engine not in SCALE_ENGINES:
            raise UsageError(f"--engine {engine}: scale times candidates on {' or '.join(SCALE_ENGINES)} "
                             "(the other engines run exported files of one model)")
        with tempfile.TemporaryDirectory(prefix="effnet-scale-") as folder:
            engines = PlanEngines(engine, Path(folder), args.device, args.threads)
            probe = LatencyProbe(engines.forward, at(0.0).plan, rounds=args.rounds, budget=args.budget)
            phi = largest_phi(_latency_fits(probe, at, limit))
        goal = (f"largest phi with batch-1 p50 latency <= {limit * 1e3:g} ms ({engine}, measured here: each candidate "
                f"timed in {args.rounds} rounds alternating with the base, median)")
    else:
        phi = 1.0 if args.phi is None else args.phi
        if not 0.0 <= phi <= MAX_PHI:
            raise UsageError(f"--phi must be between 0 and {MAX_PHI:g}")
    scaled = at(phi)
    base_plan = at(0.0).plan
    macs, base_macs = count_macs(scaled.plan), count_macs(base_plan)
    predicted = (args.alpha * args.beta**2 * args.gamma**2) ** phi
    nearest = nearest_variant(scaled, macs)
    near = VARIANTS[nearest.name]
    shape = "its own stage table" if near.table is not None else f"width {near.width}, depth {near.depth}"

    print(f"compound scaling from {scaled.base}: phi = {phi:.3f}" + (f"  ({goal})" if goal else ""))
    print(f"  depth      alpha^phi = {args.alpha}^{phi:.3f}  -> x{scaled.depth:.4f}")
    print(f"  width      beta^phi  = {args.beta}^{phi:.3f}  -> x{scaled.width:.4f}")
    print(f"  resolution gamma^phi = {args.gamma}^{phi:.3f}  -> {scaled.resolution} px "
          f"(rounded to a multiple of {args.round_to})")
    print(f"  params     {scaled.plan.num_params() / 1e6:.2f} M  (base {base_plan.num_params() / 1e6:.2f} M)")
    print(f"  FLOPs      {macs / 1e9:.3f} G multiply-adds at {scaled.resolution} px  "
          f"(x{macs / base_macs:.2f} the base; the rule (alpha*beta^2*gamma^2)^phi predicts x{predicted:.2f})")
    print(f"  nearest named variant: {nearest.name} ({shape}, {near.test_resolution} px, "
          f"{nearest.macs / 1e9:.3f} G multiply-adds)")
    print(f"  create:  {scaled.create_call()}")
    print(f"  train:   effnet train --config RECIPE.yaml {scaled.train_overrides()}")
    return 0
