"""Top-k classification of images: the ``Predictor`` API and ``effnet predict``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..data.images import IMAGE_SUFFIXES, MAX_PIXELS, ImageError, ImageSource, find_images, load_image
from ..runtime import open_backend, resolve_backend
from ..runtime.base import Backend
from .arguments import add_model_arguments

DESCRIPTION = "Classify images and print the top-k classes with names and probabilities."


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, labels: Sequence[str], k: int) -> list[list[Prediction]]:
    probabilities = softmax(logits.astype(np.float64))
    k = min(k, probabilities.shape[-1])
    order = np.argsort(-probabilities, axis=-1, kind="stable")[:, :k]
    return [
        [Prediction(int(i), labels[int(i)], float(row[i])) for i in indices]
        for row, indices in zip(probabilities, order)
    ]


class Predictor:
    """``Predictor("efficientnet_lite0")(image)`` -> top-k ``Prediction`` list.

    ``image`` may be a path, encoded bytes, a PIL image or an HxWx3 uint8 array; a list of
    them gives a list of results. Preprocessing comes from the weights entry.
    """

    def __init__(
        self,
        model: str | None = None,
        weights: Any = "default",
        *,
        backend: str = "auto",
        topk: int = 5,
        batch_size: int = 16,
        max_pixels: int = MAX_PIXELS,
        **backend_options: Any,
    ) -> None:
        self.backend: Backend = open_backend(backend, model, weights, **backend_options)
        self.topk = topk
        self.batch_size = batch_size
        self.max_pixels = max_pixels

    @property
    def arch(self) -> str:
        return self.backend.arch

    def preprocess(self, image: ImageSource) -> np.ndarray:
        return self.backend.preprocessing(load_image(image, self.max_pixels))

    def logits(self, images: Sequence[ImageSource]) -> np.ndarray:
        batch = self.backend.collate([self.preprocess(image) for image in images])
        return self.backend(batch)

    def __call__(self, image: ImageSource | list[ImageSource]) -> list[Prediction] | list[list[Prediction]]:
        if isinstance(image, list):
            results: list[list[Prediction]] = []
            for start in range(0, len(image), self.batch_size):
                chunk = image[start : start + self.batch_size]
                results.extend(top_k(self.logits(chunk), self.backend.labels, self.topk))
            return results
        return top_k(self.logits([image]), self.backend.labels, self.topk)[0]

    def predict_files(self, paths: Iterable[str]) -> Iterator[tuple[str, list[Prediction] | ImageError]]:
        """Per file: predictions, or the ``ImageError`` that stopped it (the rest go on)."""
        pending: list[tuple[str, np.ndarray]] = []

        def flush() -> Iterator[tuple[str, list[Prediction]]]:
            if pending:
                logits = self.backend(self.backend.collate([array for _, array in pending]))
                yield from zip([name for name, _ in pending], top_k(logits, self.backend.labels, self.topk))
                pending.clear()

        for path in paths:
            try:
                pending.append((path, self.preprocess(path)))
            except ImageError as error:
                yield from flush()
                yield path, error
                continue
            if len(pending) >= self.batch_size:
                yield from flush()
        yield from flush()


# -- command line -------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMG",
                        help="image files (JPEG, PNG, BMP, WebP, TIFF, GIF), or folders: every image under them")
    add_model_arguments(parser)
    parser.add_argument("--topk", "-k", type=int, default=5, help="classes to show per image (default: 5)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16, as Predictor)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")


def _format(path: str, predictions: list[Prediction]) -> str:
    width = max(len(p.label) for p in predictions)
    rank_width = len(f"{len(predictions)}.")
    lines = [path]
    for rank, p in enumerate(predictions, 1):
        lines.append(f"  {f'{rank}.':>{rank_width}} {p.label:<{width}}  {100 * p.probability:6.2f}%  (class {p.index})")
    return "\n".join(lines)


def expand_folders(arguments: Sequence[str]) -> list[str]:
    """Files as given; a folder becomes the images under it (sorted, recursive), and a folder
    without any is one usage error rather than silence."""
    paths: list[str] = []
    for argument in arguments:
        if os.path.isdir(argument):
            found = find_images(argument)
            if not found:
                from ..errors import UsageError

                raise UsageError(f"{argument}: no images in this folder (looked for {', '.join(IMAGE_SUFFIXES)})")
            paths += [str(path) for path in found]
        else:
            paths.append(argument)
    return paths


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError

    args.backend = resolve_backend(args.backend, args.weights)
    if args.topk < 1:
        raise UsageError("--topk must be at least 1")
    if args.batch_size < 1:
        raise UsageError("--batch-size must be at least 1")
    predictor = Predictor(args.model, args.weights, backend=args.backend, topk=args.topk, batch_size=args.batch_size)
    paths = expand_folders(args.images)
    failures = 0
    records: list[dict[str, Any]] = []
    for path, result in predictor.predict_files(paths):
        if isinstance(result, ImageError):
            failures += 1
            print(f"effnet: error: {result}", file=sys.stderr)
            records.append({"file": path, "error": result.reason})
        elif args.json:
            records.append({"file": path, "predictions": [asdict(p) for p in result]})
        else:
            print(_format(path, result))
    if args.json:
        document = {"model": predictor.arch, "backend": args.backend, "results": records}
        print(json.dumps(document, indent=2))
    if failures:
        print(f"effnet: {failures} of {len(paths)} images failed", file=sys.stderr)
    return 1 if failures else 0
