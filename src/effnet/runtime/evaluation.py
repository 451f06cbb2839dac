"""Top-1/top-5 accuracy on a labelled image set: ``effnet eval``.

The loop is arranged so that the network, not the data, sets the pace: DataLoader workers
decode (simplejpeg, with DCT-domain reduction for large JPEGs) and preprocess while the main
process runs the model, and unreadable images travel back as ``Failed`` markers that the
collate function sets aside, so they are counted and listed instead of stopping the run.

Under ``torchrun`` every rank evaluates the samples ``rank, rank + world, ...`` (no padding
duplicates, unlike ``DistributedSampler``), and rank 0 gathers every rank's per-image top-k
and scores them exactly as a single process would, so the numbers are identical.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.datasets import (
    DatasetError,
    Failed,
    ImageDataset,
    LabelResolver,
    parse_label_file,
    read_class_map,
    reduced_decode_side,
    scan_image_folder,
)
from ..data.transforms import Preprocessing
from ..errors import EffnetError, UsageError
from ..runtime import open_backend, resolve_backend
from ..runtime.base import Backend
from .arguments import add_model_arguments
from .distributed import DistContext

DESCRIPTION = (
    "Measure top-1/top-5 accuracy on a labelled image set: an ImageFolder tree (class folders "
    "named 967/, 0967/, n07920052/, the model's class names, or mapped with --class-map) or an "
    "image folder plus a label file (--labels, 'filename label' lines as in ImageNet val). "
    "Works under torchrun: each process evaluates a shard and rank 0 prints the totals."
)
TOPK = 5


@dataclass(frozen=True)
class EvalSet:
    """Images and, per image, the class indices that count as correct (the first is its class)."""

    root: Path
    layout: str
    paths: list[Path]
    targets: list[tuple[int, ...]]

    def __len__(self) -> int:
        return len(self.paths)


def spread(count: int, limit: int | None) -> list[int]:
    """``limit`` positions spread evenly over ``count`` samples (every class gets a say)."""
    if limit is None or limit >= count:
        return list(range(count))
    return [i * count // limit for i in range(limit)]


def load_eval_set(
    data: str | Path,
    resolver: LabelResolver,
    labels: str | Path | None = None,
    limit: int | None = None,
) -> EvalSet:
    """An ImageFolder tree, or a folder plus a label file, as an ``EvalSet``."""
    root = Path(data)
    if not root.is_dir():
        problem = "not a directory" if root.exists() else "folder not found"
        raise DatasetError(f"{root}: {problem} (DATA is an ImageFolder tree or an image folder with --labels)")
    if labels is not None:
        pairs = parse_label_file(root, labels, resolver)
        layout = "label file"
    else:
        pairs = [(path, (index,)) for path, index in scan_image_folder(root, resolver)]
        layout = "class folders"
    pairs = [pairs[i] for i in spread(len(pairs), limit)]
    return EvalSet(root, layout, [p for p, _ in pairs], [t for _, t in pairs])


# -- running the model over a shard ---------------------------------------------------------
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

    Images of different sizes (a backend whose graph preprocesses raw images) stay a list.
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
    go to the backend as they are.
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
    backend: Backend,
    eval_set: EvalSet,
    positions: Sequence[int],
    *,
    batch_size: int = 32,
    workers: int = 0,
    exact_decode: bool = False,
    pin_memory: bool = False,
    progress: Callable[[int, int, int], None] | None = None,
) -> ShardOutput:
    """Top-k class indices for every readable image among ``positions``.

    ``progress(images_done, top1_hits, images_scored)`` is called after each batch. The time
    spent blocked on the loader is kept in ``wait_seconds``: it says directly whether the data,
    not the model, set the pace.
    """
    per_image, per_batch = split_preprocessing(backend.preprocessing)
    reduce = not exact_decode and places_crop_in_source(backend.preprocessing)
    reduce_to = reduced_decode_side(backend.preprocessing) if reduce else None
    loader = make_loader(eval_set, positions, per_image, batch_size, workers, reduce_to, pin_memory)
    k = min(TOPK, backend.num_classes)
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
            top = top_indices(backend(per_batch(images)), k)
            output.positions += batch_positions
            output.topk += top.tolist()
            hits += sum(int(row[0] in eval_set.targets[p]) for row, p in zip(top, batch_positions))
        if progress is not None:
            progress(len(batch_positions) + len(failed), hits, len(output.positions))
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
    """What ``effnet eval`` prints and writes; accuracies are fractions (0.7512 = 75.12%)."""

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


# -- distributed ----------------------------------------------------------------------------
def gather(output: ShardOutput, shard: DistContext) -> ShardOutput | None:
    """Every rank's output merged on rank 0 (``None`` elsewhere)."""
    parts = shard.gather(output)
    return ShardOutput.merge(parts) if shard.is_main else None


# -- command line ---------------------------------------------------------------------------
def default_workers() -> int:
    """One decoding worker per core, at most 8. Workers mostly wait on the bounded prefetch
    queue, so they share cores with the model well: on 2 cores, 2 workers gave 0.97 of the
    model-only throughput and 1 worker 0.83 (benchmarks/eval_throughput.py, docs/evaluate.md)."""
    return max(1, min(8, os.cpu_count() or 2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA",
                        help="ImageFolder root (one sub-folder per class), or an image folder with --labels")
    add_model_arguments(parser)
    parser.add_argument("--device", default="cpu",
                        help="torch device (default: cpu); under torchrun, cuda means cuda:LOCAL_RANK")
    parser.add_argument("--batch-size", "-b", type=int, default=32, help="images per forward pass (default: 32)")
    parser.add_argument("--workers", "-j", type=int, default=default_workers(),
                        help="DataLoader processes decoding images; 0 decodes in the main process "
                             f"(default: {default_workers()}, one per CPU core, at most 8)")
    parser.add_argument("--limit", type=int, default=None,
                        help="evaluate N images spread evenly over the set (a quick check that sees every class)")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="label file: 'filename label' lines, label = class index or synset; "
                             "'file 281,282' accepts either class")
    parser.add_argument("--class-map", metavar="FILE", default=None,
                        help="'name index' lines or a JSON object mapping folder names / label tokens to indices")
    parser.add_argument("--per-class", action="store_true", help="also print accuracy per class")
    parser.add_argument("--json", metavar="OUT", default=None,
                        help="write the results (totals, per class, per image, skipped files) as JSON; - for stdout")
    parser.add_argument("--exact-decode", action="store_true",
                        help="decode every image at full size. By default a JPEG at least 6x the model's "
                             "working size (e.g. >= 1536 px short side for Lite0) is decoded DCT-reduced to >= 3x: "
                             "faster, and it changes the input less than re-saving the JPEG would")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    if args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be at least 1")
    if args.backend != "torch" and args.device != "cpu":
        raise UsageError("--device applies to the torch backend only")
    if args.json and args.json != "-":  # checked now, not after a long evaluation
        if Path(args.json).is_dir():
            raise UsageError(f"--json {args.json} is a folder; give a file name, e.g. {Path(args.json) / 'eval.json'}")
        if any(folder.exists() and not folder.is_dir() for folder in Path(args.json).parents):
            raise UsageError(f"--json {args.json}: a part of this path is a file, not a folder")


def run(args: argparse.Namespace) -> int:
    args.backend = resolve_backend(args.backend, args.weights)
    _check(args)
    device = args.device
    shard = DistContext.from_env("cuda" if device.startswith("cuda") else "cpu")
    if device.startswith("cuda") and shard.enabled:
        device = f"cuda:{shard.local_rank}"
    options = {"device": device} if args.backend == "torch" else {}
    backend = open_backend(args.backend, args.model, args.weights, **options)
    resolver = LabelResolver(
        num_classes=backend.num_classes, class_names=backend.labels,
        class_map=read_class_map(args.class_map) if args.class_map else None,
    )
    eval_set = load_eval_set(args.data, resolver, labels=args.labels, limit=args.limit)
    positions = shard.positions(len(eval_set))
    with ProgressBar(len(positions), backend.arch, shard, disable=args.no_progress) as report_progress:
        output = predict_shard(
            backend, eval_set, positions, batch_size=args.batch_size, workers=args.workers,
            exact_decode=args.exact_decode, pin_memory=device.startswith("cuda"), progress=report_progress,
        )
    merged = gather(output, shard)
    shard.close()
    if merged is None:
        return 0
    report = score(eval_set, merged, backend.labels)
    text = sys.stderr if args.json == "-" else sys.stdout
    print(_summary(report, eval_set, backend, args, shard), file=text)
    if args.per_class:
        print(_per_class_table(report), file=text)
    if args.json:
        document = json.dumps(_document(report, eval_set, backend, args, shard), indent=1)
        if args.json == "-":
            print(document)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(document + "\n")
    return 0


class ProgressBar:
    """tqdm bar on rank 0 with images/s and the running top-1 of this rank's shard."""

    def __init__(self, total: int, arch: str, shard: DistContext, disable: bool) -> None:
        from tqdm import tqdm

        where = f" [rank 0 of {shard.world_size}]" if shard.world_size > 1 else ""
        self.bar = tqdm(total=total, unit="img", desc=f"eval {arch}{where}", dynamic_ncols=True,
                        disable=True if disable or shard.rank != 0 else None, file=sys.stderr)

    def __enter__(self) -> Callable[[int, int, int], None]:
        def update(done: int, hits: int, scored: int) -> None:
            self.bar.update(done)
            if scored:
                self.bar.set_postfix_str(f"Top_1 {100 * hits / scored:.2f}%", refresh=False)

        return update

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def _weights_name(backend: Backend, weights: Any) -> str:
    entry = getattr(getattr(backend, "model", None), "pretrained_cfg", None)
    return getattr(entry, "name", None) or str(weights)


def _summary(report: EvalReport, eval_set: EvalSet, backend: Backend, args: argparse.Namespace, shard: DistContext) -> str:
    processes = f", {shard.world_size} processes" if shard.world_size > 1 else ""
    lines = [
        f"model    {backend.arch} (weights {_weights_name(backend, args.weights)}, {backend.name} backend{processes})",
        f"data     {eval_set.root} ({eval_set.layout}): {report.images} images, {len(report.per_class)} classes",
        _speed(report, args.workers) if report.seconds else "",
    ]
    if report.failed:
        lines.append(f"skipped  {report.skipped} unreadable image(s), not counted:")
        lines += [f"  {name}: {reason}" for name, reason in report.failed[:10]]
        if report.skipped > 10:
            lines.append(f"  ... and {report.skipped - 10} more (all listed in --json)")
    else:
        lines.append("skipped  0")
    lines.append(f"Top_1: {report.top1:.5f} ({100 * report.top1:.2f}%)   Top_{report.k}: {report.top5:.5f} "
                 f"({100 * report.top5:.2f}%)   on {report.evaluated} images")
    lines.append(str({"Top_1_Accuracy": report.top1, f"Top_{report.k}_Accuracy": report.top5}))
    return "\n".join(line for line in lines if line)


def _speed(report: EvalReport, workers: int) -> str:
    line = (f"speed    {report.evaluated / report.seconds:.1f} images/s ({report.seconds:.1f} s, "
            f"{100 * report.data_wait:.0f}% of it waiting for images)")
    if report.data_wait > 0.25 and report.seconds > 10:
        line += f"; data loading is the bottleneck, more --workers than {workers} may help"
    return line


def _per_class_table(report: EvalReport) -> str:
    width = max(len("name"), *(len(c.name) for c in report.per_class))
    lines = [f"{'class':>5}  {'name':<{width}}  {'images':>6}  {'Top_1':>7}  {f'Top_{report.k}':>7}"]
    lines += [f"{c.index:>5}  {c.name:<{width}}  {c.images:>6}  {100 * c.top1:6.2f}%  {100 * c.top5:6.2f}%"
              for c in report.per_class]
    return "\n".join(lines)


def _document(report: EvalReport, eval_set: EvalSet, backend: Backend, args: argparse.Namespace,
              shard: DistContext) -> dict[str, Any]:
    return {
        "model": backend.arch,
        "weights": _weights_name(backend, args.weights),
        "backend": backend.name,
        "data": str(eval_set.root),
        "layout": eval_set.layout,
        "processes": shard.world_size,
        "images": report.images,
        "evaluated": report.evaluated,
        "skipped": report.skipped,
        "Top_1_Accuracy": report.top1,
        f"Top_{report.k}_Accuracy": report.top5,
        "seconds": report.seconds,
        "images_per_second": report.evaluated / report.seconds if report.seconds else None,
        "data_wait_fraction": report.data_wait,
        "preprocessing": backend.preprocessing.to_dict(),
        "exact_decode": args.exact_decode,
        "failed": [{"file": name, "reason": reason} for name, reason in report.failed],
        "per_class": [vars(c) for c in report.per_class],
        "predictions": report.predictions,
    }
