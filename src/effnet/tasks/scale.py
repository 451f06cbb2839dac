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
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UsageError
from ..models.spec import NetworkPlan, plan_network
from ..models.variants import VARIANTS, get_variant
from .info import count_macs

DESCRIPTION = (
    "Compound scaling (Tan & Le 2019): derive width = beta^phi, depth = alpha^phi, resolution = gamma^phi "
    "from a base variant, report params/FLOPs and the nearest named variant, or find the largest phi "
    "that fits a FLOPs or latency target."
)

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
MAX_PHI = 12.0


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


def nearest_variant(scaled: Scaled) -> str:
    """The named variant of the same family closest in log-FLOPs terms.

    Distance weights each log-multiplier by its FLOPs exponent (width and resolution squared,
    depth linear), so no model needs to be counted.
    """
    family = get_variant(scaled.base)[1].family
    best, best_distance = scaled.base, math.inf
    for name, variant in VARIANTS.items():
        if variant.family is not family or variant.table is not None:
            continue
        distance = math.dist(
            (2 * math.log(scaled.width), math.log(scaled.depth), 2 * math.log(scaled.resolution)),
            (2 * math.log(variant.width), math.log(variant.depth), 2 * math.log(variant.test_resolution)),
        )
        if distance < best_distance:
            best, best_distance = name, distance
    return best


def largest_phi(fits: Callable[[float], bool], tolerance: float = 0.01) -> float:
    """The largest phi in [0, MAX_PHI] for which ``fits`` holds, assuming it is monotone."""
    if not fits(0.0):
        raise UsageError("the base model itself (phi=0, measured above) is over the target; set a larger target, "
                         "a smaller --base (e.g. lite0) or, for latency, a faster --backend (e.g. onnx)")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--phi", type=float, help="compound coefficient (default 1.0 when no target is given)")
    target.add_argument("--target-flops", help="largest phi with at most this many multiply-adds, e.g. 2G")
    target.add_argument("--target-latency", help="largest phi whose measured batch-1 p50 latency fits, e.g. 20ms")
    parser.add_argument("--base", default="efficientnet_b0", help="variant to scale from (default: efficientnet_b0)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="depth base (default 1.2, the paper's)")
    parser.add_argument("--beta", type=float, default=BETA, help="width base (default 1.1, the paper's)")
    parser.add_argument("--gamma", type=float, default=GAMMA, help="resolution base (default 1.15, the paper's)")
    parser.add_argument("--round-to", type=int, default=8,
                        help="round the resolution to a multiple of this (default 8: keeps stride-2 maps even)")
    parser.add_argument("--backend", default="torch", help="backend for --target-latency, e.g. torch, torch-cl, onnx (default: torch; the list: "
                        "effnet bench --help); onnx exports every candidate, so each takes seconds longer")
    parser.add_argument("--threads", type=int, default=0, help="threads for --target-latency (default: all)")
    parser.add_argument("--budget", type=float, default=1.0, help="seconds of timing per candidate (default 1)")


def _latency_fits(args: argparse.Namespace, seconds: float) -> Callable[[float], bool]:
    from .bench import BenchConfig, measure_plan

    def fits(phi: float) -> bool:
        scaled = scale(args.base, phi, args.alpha, args.beta, args.gamma, args.round_to)
        config = BenchConfig(backend=args.backend, batch_size=1, threads=args.threads, budget=args.budget)
        p50 = measure_plan(scaled.plan, config).p50
        print(f"  phi {phi:.3f}: {scaled.resolution} px, p50 {p50 * 1e3:.1f} ms", file=sys.stderr)
        return p50 <= seconds

    return fits


def run(args: argparse.Namespace) -> int:
    if min(args.alpha, args.beta, args.gamma) < 1.0:
        raise UsageError("alpha, beta and gamma must be >= 1 (the paper's constraint)")
    if args.round_to < 1:
        raise UsageError("--round-to must be a positive integer")
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
        phi = largest_phi(_latency_fits(args, limit))
        goal = f"largest phi with batch-1 p50 latency <= {limit * 1e3:g} ms ({args.backend}, measured here)"
    else:
        phi = 1.0 if args.phi is None else args.phi
        if not 0.0 <= phi <= MAX_PHI:
            raise UsageError(f"--phi must be between 0 and {MAX_PHI:g}")
    scaled = at(phi)
    base_plan = at(0.0).plan
    macs, base_macs = count_macs(scaled.plan), count_macs(base_plan)
    predicted = (args.alpha * args.beta**2 * args.gamma**2) ** phi
    nearest = nearest_variant(scaled)
    near = VARIANTS[nearest]

    print(f"compound scaling from {scaled.base}: phi = {phi:.3f}" + (f"  ({goal})" if goal else ""))
    print(f"  depth      alpha^phi = {args.alpha}^{phi:.3f}  -> x{scaled.depth:.4f}")
    print(f"  width      beta^phi  = {args.beta}^{phi:.3f}  -> x{scaled.width:.4f}")
    print(f"  resolution gamma^phi = {args.gamma}^{phi:.3f}  -> {scaled.resolution} px "
          f"(rounded to a multiple of {args.round_to})")
    print(f"  params     {scaled.plan.num_params() / 1e6:.2f} M  (base {base_plan.num_params() / 1e6:.2f} M)")
    print(f"  FLOPs      {macs / 1e9:.3f} G multiply-adds at {scaled.resolution} px  "
          f"(x{macs / base_macs:.2f} the base; the rule (alpha*beta^2*gamma^2)^phi predicts x{predicted:.2f})")
    print(f"  nearest named variant: {nearest} (width {near.width}, depth {near.depth}, {near.test_resolution} px)")
    print(f"  create:  {scaled.create_call()}")
    print(f"  train:   effnet train --config RECIPE.yaml {scaled.train_overrides()}")
    return 0
