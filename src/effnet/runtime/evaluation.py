"""Top-1/top-5 accuracy of an engine on a labelled image set: the library behind ``effnet eval``.

``evaluate(engine, eval_set)`` is the entry point. It runs in three steps so that torchrun
ranks share the work: ``predict_shard`` (this rank's images -> per-image top-k), ``gather``
(every rank's shard, merged), ``score`` (totals, per class, per image).

The loop is arranged so that the network, not the data, sets the pace: DataLoader workers
decode (simplejpeg, with DCT-domain reduction for large JPEGs) and preprocess while the main
process runs the model, and unreadable images travel back as ``Failed`` markers that the
collate function sets aside, so they are counted and listed instead of stopping the run.

Under ``torchrun`` every rank evaluates the samples ``rank, rank + world, ...`` (no padding
duplicates, unlike ``DistributedSampler``), and every rank's per-image top-k is gathered and
scored exactly as a single process would, so the numbers are identical.

torch is imported only inside the functions that build a DataLoader: importing this module
stays light.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._progress import progress as progress_bar
from ..data.datasets import EvalSet, Failed, ImageDataset, reduced_decode_side
from ..data.transforms import Preprocessing
from ..errors import EffnetError, UsageError
from .base import Engine
from .distributed import DistContext

#: How many of the best classes each image keeps (top-1 and top-5 accuracy).
TOPK = 5


def default_workers() -> int:
    """One decoding worker per core, at most 8, so that decoding keeps up on machines with
    many cores. On 2 cores the choice hardly matters: on an idle one 0, 1 and 2 workers gave
    0.83, 0.83 and 0.80 of the model-only throughput, the model waiting on data 2-9% of the
    time; the rest is decoding taking CPU from the model (benchmarks/eval_throughput.py,
    docs/evaluate.md)."""
    return max(1, min(8, os.cpu_count() or 2))


@dataclass
class ShardOutput:
    """Per evaluated image: its position in the ``EvalSet`` and its top-k class indices."""

    positions: list[int] = field(default_factory=list)
    topk: list[list[int]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    wait_seconds: float = 0.0

    @classmethod
    def merge(cls, parts: Sequence["ShardOutput"]) -> "ShardOutput":
        """Rank outputs -> one output in data order, as a single process would have produced."""
        rows = sorted((p, k) for part in parts for p, k in zip(part.positions, part.topk))
        failed = sorted(f for part in parts for f in part.failed)
        slowest = max(parts, key=lambda part: part.seconds, default=cls())
        return cls([p for p, _ in rows], [k for _, k in rows], failed, slowest.seconds, slowest.wait_seconds)


def collate(batch: list[tuple[Any, int]]) -> tuple[Any, list[int], list[tuple[int, str]]]:
    """Stack the good images into one tensor (shared memory across workers); set failures aside.

    Images of different sizes (an engine whose graph preprocesses raw images) stay a list.
    """
    import torch

    good = [(image, position) for image, position in batch if not isinstance(image, Failed)]
    failed = [(position, image.reason) for image, position in batch if isinstance(image, Failed)]
    arrays = [image for image, _ in good]
    images: Any = None
    if arrays:
        same_shape = all(a.shape == arrays[0].shape for a in arrays)
        images = torch.from_numpy(np.stack(arrays)) if same_shape else arrays
    return images, [position for _, position in good], failed


def places_crop_in_source(preprocessing: Any) -> bool:
    """Whether the preprocessing can take a reduced decode (it accepts ``source_size``)."""
    return "source_size" in inspect.signature(preprocessing).parameters


class BatchNormalize:
    """``Preprocessing.normalize`` for a whole uint8 NHWC batch, in torch, in the main process.

    Workers then ship uint8 crops (a quarter of the bytes of float32) and skip the per-image
    float work, which costs them as much as decoding; torch does it for the batch on all
    cores. It is the same float32 division and subtraction, so the network input is
    bit-identical to ``Preprocessing.__call__`` (the tests check it).
    """

    def __init__(self, preprocessing: Preprocessing) -> None:
        import torch

        std = np.asarray(preprocessing.std, np.float32)
        self.scale = torch.from_numpy(np.float32(255.0) * std).view(1, 3, 1, 1)
        self.offset = torch.from_numpy(np.asarray(preprocessing.mean, np.float32) / std).view(1, 3, 1, 1)

    def __call__(self, images: Any) -> np.ndarray:
        batch = images.permute(0, 3, 1, 2).contiguous().float()
        return batch.div_(self.scale).sub_(self.offset).numpy()


def _as_given(images: Any) -> Any:
    return images.numpy() if hasattr(images, "numpy") else images


def split_preprocessing(preprocessing: Any) -> tuple[Callable[..., Any], Callable[[Any], Any]]:
    """(work per image in the DataLoader workers, work per batch in the main process).

    A ``Preprocessing`` is split after the crop (see ``BatchNormalize``). Anything else, such
    as a graph that preprocesses raw images itself, runs whole in the workers and its batches
    go to the engine as they are.
    """
    if places_crop_in_source(preprocessing):
        return preprocessing.resize_crop, BatchNormalize(preprocessing)
    return preprocessing, _as_given


def make_loader(
    eval_set: EvalSet,
    positions: Sequence[int],
    transform: Callable[..., Any],
    batch_size: int,
    workers: int,
    reduce_to: int | None = None,
    pin_memory: bool = False,
) -> Any:
    """A DataLoader yielding ``collate`` batches of the given positions, in order."""
    from torch.utils.data import DataLoader

    # The dataset's "label" is the sample's position: targets stay in the main process.
    samples = [(path, position) for position, path in enumerate(eval_set.paths)]
    return DataLoader(
        ImageDataset(samples, transform, reduce_to=reduce_to), batch_size=batch_size, sampler=list(positions),
        num_workers=workers, collate_fn=collate, pin_memory=pin_memory, prefetch_factor=4 if workers else None,
    )


def top_indices(logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest logits per row, best first (ties: lower index first)."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def predict_shard(
    engine: Engine,
    eval_set: EvalSet,
    positions: Sequence[int],
    *,
    batch_size: int = 32,
    workers: int = 0,
    exact_decode: bool = False,
    pin_memory: bool = False,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> ShardOutput:
    """Top-k class indices for every readable image among ``positions``.

    ``on_batch(images_done, top1_hits, images_scored)`` is called after each batch (hits stay 0
    for an unlabelled set). The time spent blocked on the loader is kept in ``wait_seconds``: it
    says directly whether the data, not the model, set the pace.
    """
    per_image, per_batch = split_preprocessing(engine.preprocessing)
    reduce = not exact_decode and places_crop_in_source(engine.preprocessing)
    reduce_to = reduced_decode_side(engine.preprocessing) if reduce else None
    loader = make_loader(eval_set, positions, per_image, batch_size, workers, reduce_to, pin_memory)
    k = min(TOPK, engine.num_classes)
    output = ShardOutput()
    hits = 0
    start = time.perf_counter()
    batches = iter(loader)
    while True:
        before = time.perf_counter()
        batch = next(batches, None)
        output.wait_seconds += time.perf_counter() - before
        if batch is None:
            break
        images, batch_positions, failed = batch
        output.failed += failed
        if images is not None:
            top = top_indices(engine(per_batch(images)), k)
            output.positions += batch_positions
            output.topk += top.tolist()
            if eval_set.targets is not None:
                hits += sum(int(row[0] in eval_set.targets[p]) for row, p in zip(top, batch_positions))
        if on_batch is not None:
            on_batch(len(batch_positions) + len(failed), hits, len(output.positions))
    output.seconds = time.perf_counter() - start
    return output


# -- scoring --------------------------------------------------------------------------------
@dataclass
class ClassScore:
    index: int
    name: str
    images: int
    top1: float
    top5: float


@dataclass
class EvalReport:
    """Accuracy over the readable images, per class and per image; fractions (0.7512 = 75.12%).

    ``failed`` lists (file, reason) for the images that could not be read; ``predictions`` has
    one ``{"file", "target", "top<k>"}`` row per evaluated image, in data order."""

    images: int
    evaluated: int
    top1: float
    top5: float
    k: int
    failed: list[tuple[str, str]]
    per_class: list[ClassScore]
    predictions: list[dict[str, Any]]
    seconds: float
    wait_seconds: float = 0.0

    @property
    def skipped(self) -> int:
        return len(self.failed)

    @property
    def data_wait(self) -> float:
        """Share of the run the model sat waiting for decoded images (near 0: data keeps up)."""
        return self.wait_seconds / self.seconds if self.seconds else 0.0


def score(eval_set: EvalSet, output: ShardOutput, labels: Sequence[str]) -> EvalReport:
    """Accuracy over the readable images; an image counts as right if a prediction is any accepted label."""
    if eval_set.targets is None:
        raise UsageError(f"{eval_set.root}: accuracy needs labels (class folders or a label file)")
    if not output.positions:
        first = f"; first: {eval_set.paths[output.failed[0][0]]}: {output.failed[0][1]}" if output.failed else ""
        raise EffnetError(f"no image could be evaluated ({len(output.failed)} unreadable){first}")
    k = len(output.topk[0])
    per_class: dict[int, list[int]] = {}
    top1_hits = top5_hits = 0
    predictions = []
    for position, top in zip(output.positions, output.topk):
        accepted = eval_set.targets[position]
        hit1, hit5 = top[0] in accepted, any(i in accepted for i in top)
        top1_hits += hit1
        top5_hits += hit5
        counts = per_class.setdefault(accepted[0], [0, 0, 0])
        counts[0] += 1
        counts[1] += hit1
        counts[2] += hit5
        predictions.append({"file": _relative(eval_set.paths[position], eval_set.root),
                            "target": list(accepted), f"top{k}": list(top)})
    evaluated = len(output.positions)
    return EvalReport(
        images=evaluated + len(output.failed),
        evaluated=evaluated,
        top1=top1_hits / evaluated,
        top5=top5_hits / evaluated,
        k=k,
        failed=[(_relative(eval_set.paths[p], eval_set.root), reason) for p, reason in output.failed],
        per_class=[
            ClassScore(index, labels[index] if index < len(labels) else str(index), n, h1 / n, h5 / n)
            for index, (n, h1, h5) in sorted(per_class.items())
        ],
        predictions=predictions,
        seconds=output.seconds,
        wait_seconds=output.wait_seconds,
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def gather(output: ShardOutput, context: DistContext) -> ShardOutput:
    """Every rank's output merged in data order, on every rank (one process: ``output``)."""
    return ShardOutput.merge(context.gather(output)) if context.enabled else output


def evaluate(
    engine: Engine,
    eval_set: EvalSet,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    exact_decode: bool = False,
    context: DistContext | None = None,
    progress: bool = False,
) -> EvalReport:
    """Top-1/top-5 accuracy of ``engine`` on ``eval_set`` (from ``data.datasets.load_eval_set``).

    ``workers``: DataLoader processes decoding images (None: ``default_workers()``; 0 decodes in
    this process). ``exact_decode``: decode every JPEG at full size instead of DCT-reduced
    (see ``data.datasets.REDUCE_SAFETY``). ``context``: the torchrun process group
    (``DistContext.from_env``); each rank evaluates its share and every rank returns the same
    report for the whole set. ``progress``: draw a bar with the running top-1 (terminal and
    rank 0 only, see ``effnet._progress``).
    """
    context = context or DistContext()
    positions = context.positions(len(eval_set))
    where = f" [rank 0 of {context.world_size}]" if context.enabled else ""
    with progress_bar(total=len(positions), desc=f"eval {engine.arch}{where}", unit="img",
                      enabled=progress) as bar:

        def on_batch(done: int, hits: int, scored: int) -> None:
            bar.update(done)
            if scored:
                bar.set_postfix_str(f"Top_1 {100 * hits / scored:.2f}%", refresh=False)

        output = predict_shard(
            engine, eval_set, positions, batch_size=batch_size,
            workers=default_workers() if workers is None else workers, exact_decode=exact_decode,
            pin_memory=engine.device_type == "cuda", on_batch=on_batch,
        )
    return score(eval_set, gather(output, context), engine.labels)
