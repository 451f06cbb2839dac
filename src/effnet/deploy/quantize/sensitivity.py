"""Which layers stay float: each layer's int8 error measured alone, then the fewest float
layers (of the most sensitive, within a time and size budget) that bring the whole int8
model closest to float.

Errors are measured under onnxruntime's int8 kernels, as deployed (not an emulation), on a
few calibration images, against the float graph's logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._progress import progress as progress_bar
from .graph import Layer
from .recipe import AUTO_FLOAT_MACS, AUTO_MAX_FLOAT, AUTO_TOLERANCE, Settings
from .scales import quantize_model
from .sessions import run_batches, session


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """Mean squared logits error over the logits' variance: 0 is exact, 1 is noise."""
    return float(np.mean((actual - expected) ** 2) / max(float(np.var(expected)), 1e-12))


def sensitivity(graph_for: Callable[[Layer], Path], workdir: Path, cache: Path, settings: Settings,
                layers: list[Layer], inputs: np.ndarray, reference: np.ndarray, progress: bool = False,
                overrides: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """Each layer quantized alone (int8 kernels as deployed): the logits error it causes,
    stored in ``layer.error``.

    ``graph_for(layer)``: the float graph to quantize for that layer (with bias correction on
    that layer only: corrections elsewhere would be errors when those layers stay float).
    """
    probe = workdir / "probe.onnx"
    for layer in progress_bar(layers, desc="sensitivity per layer", unit="layer", enabled=progress):
        quantize_model(graph_for(layer), probe, cache, settings, nodes_to_quantize=layer.nodes, overrides=overrides)
        layer.error = relative_error(run_batches(session(probe), inputs), reference)
    probe.unlink(missing_ok=True)


def within_float_budget(kept: Sequence[Layer], layers: Sequence[Layer]) -> bool:
    """Whether ``kept`` float layers hold at most ``AUTO_FLOAT_MACS`` of the multiply-adds
    (speed) and of the weights (file size)."""
    for key in ("macs", "weights"):
        if sum(getattr(layer, key) for layer in kept) > AUTO_FLOAT_MACS * sum(getattr(layer, key) for layer in layers):
            return False
    return True


def float_candidates(layers: Sequence[Layer], keep_float: int | str) -> tuple[list[Layer], list[int]]:
    """The layers in the order they would be kept float, and the counts of them to try.

    ``keep_float="auto"``: the most sensitive layers that fit the budget together (at most
    ``AUTO_MAX_FLOAT``), each count from none to all of them; a number: exactly that many of
    the most sensitive.
    """
    ranked = sorted(layers, key=lambda layer: -layer.error)
    if keep_float != "auto":
        return ranked, [min(int(keep_float), len(ranked))]
    order: list[Layer] = []
    for layer in ranked:
        if len(order) < AUTO_MAX_FLOAT and within_float_budget([*order, layer], layers):
            order.append(layer)
    return order, list(range(len(order) + 1))


@dataclass
class FloatChoice:
    """The outcome of the keep-float search: which layers stay float, and the int8 file."""

    float_layers: list[Layer]
    #: (float layer count, relative logits error) of every count tried
    trials: list[tuple[int, float]]
    path: Path

    @property
    def count(self) -> int:
        return len(self.float_layers)


def choose_float_layers(graph_for: Callable[[set[str]], Path], workdir: Path, cache: Path, settings: Settings,
                        layers: Sequence[Layer], keep_float: int | str, inputs: np.ndarray, reference: np.ndarray,
                        overrides: dict[str, list[dict[str, Any]]] | None = None,
                        progress: bool = False) -> FloatChoice:
    """Quantize the model with each candidate count of float layers and keep the fewest
    whose error is within ``AUTO_TOLERANCE`` of the best (float layers cost time).

    ``graph_for(float_nodes)``: the float graph to quantize when those nodes stay float.
    Marks the chosen layers ``kept_float``.
    """
    order, candidates = float_candidates(layers, keep_float)
    trials: list[tuple[int, float]] = []
    for count in progress_bar(candidates, desc="choosing float layers", unit="try",
                              enabled=progress and len(candidates) > 1):
        kept_nodes = {name for layer in order[:count] for name in layer.nodes}
        trial = workdir / f"int8_{count}.onnx"
        quantize_model(graph_for(kept_nodes), trial, cache, settings, nodes_to_exclude=sorted(kept_nodes),
                       overrides=overrides)
        trials.append((count, relative_error(run_batches(session(trial), inputs), reference)))
    best = min(error for _, error in trials)
    count = next(count for count, error in trials if error <= AUTO_TOLERANCE * best)
    for layer in order[:count]:
        layer.kept_float = True
    return FloatChoice(order[:count], trials, workdir / f"int8_{count}.onnx")
