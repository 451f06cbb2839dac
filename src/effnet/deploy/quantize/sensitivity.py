"""Which layers stay float: each layer's int8 error measured alone, then float layers added
one at a time (most sensitive first, within a time and size budget) while each one makes the
whole int8 model closer to float.

Errors are measured under onnxruntime's int8 kernels, as deployed (not an emulation), on
calibration images, against the float graph's logits.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..._progress import progress as progress_bar
from .graph import Layer, requantized_by_onnxruntime
from .recipe import AUTO_CANDIDATES, AUTO_FLOAT_MACS, AUTO_MAX_FLOAT, AUTO_MIN_GAIN, Settings
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


def float_candidates(layers: Sequence[Layer], keep_float: int | str) -> list[Layer]:
    """The layers the keep-float search may try, most sensitive first.

    ``keep_float="auto"``: the ``AUTO_CANDIDATES`` most sensitive layers that fit the budget
    alone (the search checks the budget of each set it tries); a number: every layer.
    """
    ranked = sorted(layers, key=lambda layer: -layer.error)
    if keep_float != "auto":
        return ranked
    return [layer for layer in ranked if within_float_budget([layer], layers)][:AUTO_CANDIDATES]


@dataclass
class Trial:
    """One int8 file the keep-float search built: its float layers, its error, and what became of it."""

    float_layers: list[str]
    relative_error: float | None
    #: ``kept``; ``no gain`` (the layer did not cut the error by ``AUTO_MIN_GAIN``); ``runs
    #: int8`` (onnxruntime would re-quantize it, ``graph.requantized_by_onnxruntime``)
    outcome: str


@dataclass
class FloatChoice:
    """The outcome of the keep-float search: which layers stay float, and the int8 file."""

    float_layers: list[Layer]
    trials: list[Trial]
    path: Path

    @property
    def count(self) -> int:
        return len(self.float_layers)

    @property
    def curve(self) -> list[tuple[int, float]]:
        """(float layer count, relative logits error) of each set kept: never increasing."""
        return [(len(t.float_layers), t.relative_error) for t in self.trials if t.outcome == "kept"]


def choose_float_layers(graph_for: Callable[[set[str]], Path], workdir: Path, cache: Path, settings: Settings,
                        layers: Sequence[Layer], keep_float: int | str, inputs: np.ndarray, reference: np.ndarray,
                        overrides: dict[str, list[dict[str, Any]]] | None = None,
                        neighbours: dict[str, list[Layer]] | None = None, progress: bool = False) -> FloatChoice:
    """Grow the set of float layers one at a time, most sensitive first, from none.

    A layer joins only when the int8 model with it float is really float there (onnxruntime
    would otherwise re-quantize it per-tensor, see ``requantized_by_onnxruntime``) and, for
    ``"auto"``, when it stays in the budget and cuts the logits error on ``inputs`` by
    ``AUTO_MIN_GAIN``; so adding float layers never makes the chosen file worse. A layer that
    cannot stay float alone is tried with each neighbour (``neighbours``,
    ``graph.neighbour_layers``: the first depthwise conv with the stem), the better pair
    counting, and every pass starts again from the most sensitive.
    ``graph_for(float_nodes)``: the float graph to quantize when those nodes stay float.
    Marks the chosen layers ``kept_float``.
    """
    auto = keep_float == "auto"
    neighbours = neighbours or {}
    target = AUTO_MAX_FLOAT if auto else int(keep_float)
    pool = float_candidates(layers, keep_float)
    kept: list[Layer] = []
    trials: list[Trial] = []
    bar = progress_bar(total=None, desc="choosing float layers", unit="try", enabled=progress and target > 0)

    files = itertools.count()

    def build(chosen: list[Layer]) -> tuple[Path, float | None]:
        """The int8 file with ``chosen`` float, and its error (None when onnxruntime would not keep them float)."""
        nodes = {node for layer in chosen for node in layer.nodes}
        path = workdir / f"int8_{next(files)}.onnx"
        quantize_model(graph_for(nodes), path, cache, settings, nodes_to_exclude=sorted(nodes), overrides=overrides)
        bar.update()
        if requantized_by_onnxruntime(onnx.load(str(path)), nodes):
            return path, None
        return path, relative_error(run_batches(session(path), inputs), reference)

    def names(chosen: Sequence[Layer]) -> list[str]:
        return [layer.name for layer in chosen]

    best_path, best_error = build([])
    trials.append(Trial([], best_error, "kept"))
    while len(kept) < target:
        for layer in [layer for layer in pool if layer not in kept]:
            if auto and not within_float_budget([*kept, layer], layers):
                continue
            pool.remove(layer)  # tried once: alone, then with each neighbour when alone it runs int8
            added = [layer]
            path, error = build([*kept, layer])
            if error is None:
                trials.append(Trial(names([*kept, layer]), None, "runs int8"))
                for partner in neighbours.get(layer.name, []):
                    pair = [partner, layer]
                    if partner in kept or len(kept) + 2 > target or (
                            auto and not within_float_budget([*kept, *pair], layers)):
                        continue
                    pair_path, pair_error = build([*kept, *pair])
                    if pair_error is None:
                        trials.append(Trial(names([*kept, *pair]), None, "runs int8"))
                    elif error is None or pair_error < error:
                        if error is not None:
                            trials.append(Trial(names([*kept, *added]), error, "no gain"))
                        added, path, error = pair, pair_path, pair_error
                    else:
                        trials.append(Trial(names([*kept, *pair]), pair_error, "no gain"))
            if error is None:
                continue
            if auto and error > (1 - AUTO_MIN_GAIN) * best_error:
                trials.append(Trial(names([*kept, *added]), error, "no gain"))
                continue
            trials.append(Trial(names([*kept, *added]), error, "kept"))
            kept += [chosen for chosen in added if chosen not in kept]
            best_path, best_error = path, error
            break
        else:
            break
    bar.close()
    for layer in kept:
        layer.kept_float = True
    return FloatChoice(kept, trials, best_path)
