"""``effnet predict``: parse the options, run a ``runtime.predictor.Predictor``, print the top-k."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ..data.images import IMAGE_SUFFIXES, ImageError, find_images
from ..errors import UsageError
from ..options import add_options, check_json_destination, positive_int, preprocessing_overrides, write_json
from ..runtime.predictor import Prediction, Predictor

DESCRIPTION = "Classify images and print the top-k classes with names and probabilities."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMG",
                        help="image files (JPEG, PNG, BMP, WebP, TIFF, GIF), or folders: every image under them")
    add_options(parser, "model", "weights", "engine", "device", "threads", "precision")
    parser.add_argument("--topk", "-k", type=positive_int, default=5, metavar="K", help="classes to show per image")
    parser.add_argument("--batch-size", type=positive_int, default=16, metavar="N",
                        help="images per forward pass")
    add_options(parser, "json")
    add_options(parser, "preprocessing")


def expand_folders(arguments: Sequence[str]) -> list[str]:
    """Files as given; a folder becomes the images under it (sorted, recursive), and a folder
    without any is one usage error rather than silence."""
    paths: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = find_images(argument)
            if not found:
                raise UsageError(f"{argument}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
            paths += [str(path) for path in found]
        else:
            paths.append(argument)
    return paths


def run(args: argparse.Namespace) -> int:
    check_json_destination(args.json)
    paths = expand_folders(args.images)
    predictor = Predictor(args.model, args.weights, engine=args.engine, topk=args.topk, batch_size=args.batch_size,
                          device=args.device, threads=args.threads, precision=args.precision,
                          preprocessing=preprocessing_overrides(args))
    tables = args.json != "-"
    failures = 0
    records: list[dict[str, Any]] = []
    for path, result in predictor.predict_files(paths):
        if isinstance(result, ImageError):
            failures += 1
            print(f"effnet: error: {result}", file=sys.stderr)
            records.append({"file": path, "error": result.reason})
            continue
        records.append({"file": path, "predictions": [asdict(p) for p in result]})
        if tables:
            print(_format(path, result))
    if args.json:
        write_json(args.json, {"model": predictor.arch, "engine": predictor.engine.name, "results": records})
    if failures:
        print(f"effnet: {failures} of {len(paths)} images failed", file=sys.stderr)
    return 1 if failures else 0


def _format(path: str, predictions: list[Prediction]) -> str:
    width = max(len(p.label) for p in predictions)
    rank_width = len(f"{len(predictions)}.")
    lines = [path]
    for rank, p in enumerate(predictions, 1):
        lines.append(f"  {f'{rank}.':>{rank_width}} {p.label:<{width}}  {100 * p.probability:6.2f}%  (class {p.index})")
    return "\n".join(lines)
