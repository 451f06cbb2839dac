"""``effnet eval``: parse the options, run ``runtime.evaluation.evaluate``, print the report."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..data.datasets import EvalSet, LabelResolver, load_eval_set, read_class_map
from ..errors import UsageError
from ..options import OPTIONS, add_options, check_json_destination, positive_int, preprocessing_overrides, write_json
from ..runtime import Engine, open_engine
from ..runtime.distributed import DistContext
from ..runtime.evaluation import EvalReport, default_workers, evaluate

DESCRIPTION = (
    "Measure top-1/top-5 accuracy on a labelled image set: an ImageFolder tree (class folders "
    "named 967/, 0967/, n07920052/, the model's class names, or mapped with --class-map) or an "
    "image folder plus a label file (--labels, 'filename label' lines as in ImageNet val). "
    "Works under torchrun: each process evaluates a shard and rank 0 prints the totals."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="DATA",
                        help="ImageFolder root (one sub-folder per class), or an image folder with --labels")
    device_help = OPTIONS["device"].settings["help"] + "; under torchrun, cuda is each process's own GPU"
    add_options(parser, "model", "weights", "engine", "device", "threads", "precision",
                device={"help": device_help})
    parser.add_argument("--batch-size", "-b", type=positive_int, default=32, metavar="N",
                        help="images per forward pass")
    parser.add_argument("--workers", "-j", type=int, default=default_workers(), metavar="N",
                        help="DataLoader processes decoding images, one per CPU core up to 8 by default; "
                             "0 decodes in the main process")
    parser.add_argument("--limit", type=positive_int, default=None, metavar="N",
                        help="evaluate N images spread evenly over the set (a quick check that sees every class)")
    parser.add_argument("--labels", metavar="FILE", default=None,
                        help="label file: 'filename label' lines, label = class index or synset; "
                             "'file 281,282' accepts either class")
    parser.add_argument("--class-map", metavar="FILE", default=None,
                        help="'name index' lines or a JSON object mapping folder names / label tokens to indices")
    parser.add_argument("--per-class", action="store_true", help="also print accuracy per class")
    add_options(parser, "json", json={"help": "write the results (totals, per class, per image, skipped files) as "
                                              "JSON to PATH (a .json file) besides the summary, or print them to "
                                              "stdout with '-' or no PATH (the summary then goes to stderr)"})
    parser.add_argument("--exact-decode", action="store_true",
                        help="decode every image at full size. By default a JPEG at least 6x the model's "
                             "working size (e.g. >= 1536 px short side for Lite0) is decoded DCT-reduced to >= 3x: "
                             "faster, and it changes the input less than re-saving the JPEG would")
    add_options(parser, "no_progress")
    add_options(parser, "preprocessing")


def run(args: argparse.Namespace) -> int:
    if args.workers < 0:
        raise UsageError("--workers must be 0 or more")
    check_json_destination(args.json)  # now, not after a long evaluation
    context = DistContext.from_env("cuda" if str(args.device).startswith("cuda") else "cpu")
    try:
        engine = open_engine(args.engine, args.model, args.weights, device=context.local_device(args.device),
                             threads=args.threads, precision=args.precision,
                             preprocessing=preprocessing_overrides(args))
        resolver = LabelResolver(
            num_classes=engine.num_classes, class_names=engine.labels,
            class_map=read_class_map(args.class_map) if args.class_map else None,
        )
        eval_set = load_eval_set(args.data, resolver, labels=args.labels, limit=args.limit)
        report = evaluate(engine, eval_set, batch_size=args.batch_size, workers=args.workers,
                          exact_decode=args.exact_decode, context=context, progress=not args.no_progress)
    finally:
        context.close()
    if not context.is_main:
        return 0
    text = sys.stderr if args.json == "-" else sys.stdout
    print(_summary(report, eval_set, engine, args.workers, context), file=text)
    if args.per_class:
        print(_per_class_table(report), file=text)
    if args.json:
        write_json(args.json, _document(report, eval_set, engine, args.exact_decode, context))
    return 0


def _summary(report: EvalReport, eval_set: EvalSet, engine: Engine, workers: int, context: DistContext) -> str:
    processes = f", {context.world_size} processes" if context.enabled else ""
    lines = [
        f"model    {engine.arch} (weights {engine.weights_name}, {engine.name} engine{processes})",
        f"data     {eval_set.root} ({eval_set.layout}): {_count(report.images, 'image')}, "
        f"{_count(len(report.per_class), 'class')}",
        _speed(report, workers) if report.seconds else "",
    ]
    if report.failed:
        lines.append(f"skipped  {_count(report.skipped, 'unreadable image')}, not counted:")
        lines += [f"  {name}: {reason}" for name, reason in report.failed[:10]]
        if report.skipped > 10:
            lines.append(f"  ... and {report.skipped - 10} more (all listed in --json)")
    else:
        lines.append("skipped  0")
    lines.append(f"Top_1: {report.top1:.5f} ({100 * report.top1:.2f}%)   Top_{report.k}: {report.top5:.5f} "
                 f"({100 * report.top5:.2f}%)   on {_count(report.evaluated, 'image')}")
    lines.append(str({"Top_1_Accuracy": report.top1, f"Top_{report.k}_Accuracy": report.top5}))
    return "\n".join(line for line in lines if line)


def _count(number: int, noun: str) -> str:
    """``1 image``, ``2 images``, ``3 classes``."""
    if number == 1:
        return f"1 {noun}"
    return f"{number} {noun}{'es' if noun.endswith('s') else 's'}"


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


def _document(report: EvalReport, eval_set: EvalSet, engine: Engine, exact_decode: bool,
              context: DistContext) -> dict[str, Any]:
    return {
        "model": engine.arch,
        "weights": engine.weights_name,
        "engine": engine.name,
        "data": str(eval_set.root),
        "layout": eval_set.layout,
        "processes": context.world_size,
        "images": report.images,
        "evaluated": report.evaluated,
        "skipped": report.skipped,
        "Top_1_Accuracy": report.top1,
        f"Top_{report.k}_Accuracy": report.top5,
        "seconds": report.seconds,
        "images_per_second": report.evaluated / report.seconds if report.seconds else None,
        "data_wait_fraction": report.data_wait,
        "preprocessing": engine.preprocessing.to_dict(),
        "exact_decode": exact_decode,
        "failed": [{"file": name, "reason": reason} for name, reason in report.failed],
        "per_class": [vars(c) for c in report.per_class],
        "predictions": report.predictions,
    }
