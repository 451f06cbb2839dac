"""``Predictor``: images in, top-k classes out, on any engine (the public inference API).

Preprocessing and labels come from the engine, which reads them from the weights entry or
the exported file, so a model never runs with another source's normalization by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..data.images import MAX_PIXELS, ImageError, ImageSource, load_image
from . import open_engine
from .base import Engine

Key = TypeVar("Key")


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

    ``image`` may be a path, encoded bytes, a PIL image or an HxWx3 uint8 array. A list of them
    gives one result per image, in order: its predictions, or the ``ImageError`` that stopped
    that image (a missing, corrupt or oversized one), so one bad image never costs the others
    theirs; a single image that cannot be used raises its ``ImageError``. ``engine``: a name
    from ``effnet.runtime.ENGINES`` or ``auto``; ``engine_options`` go to it (``device``,
    ``threads``, ``preprocessing`` overrides, ...).
    """

    def __init__(
        self,
        model: str | None = None,
        weights: Any = "default",
        *,
        engine: str = "auto",
        topk: int = 5,
        batch_size: int = 16,
        max_pixels: int = MAX_PIXELS,
        **engine_options: Any,
    ) -> None:
        self.engine: Engine = open_engine(engine, model, weights, **engine_options)
        self.topk = topk
        self.batch_size = batch_size
        self.max_pixels = max_pixels

    @property
    def arch(self) -> str:
        return self.engine.arch

    def preprocess(self, image: ImageSource) -> np.ndarray:
        return self.engine.preprocessing(load_image(image, self.max_pixels))

    def logits(self, images: Sequence[ImageSource]) -> np.ndarray:
        batch = self.engine.collate([self.preprocess(image) for image in images])
        return self.engine(batch)

    def __call__(
        self, image: ImageSource | list[ImageSource]
    ) -> list[Prediction] | list[list[Prediction] | ImageError]:
        if isinstance(image, list):
            return [result for _, result in self._predict_each(enumerate(image))]
        return top_k(self.logits([image]), self.engine.labels, self.topk)[0]

    def predict_files(self, paths: Iterable[str]) -> Iterator[tuple[str, list[Prediction] | ImageError]]:
        """Per file: predictions, or the ``ImageError`` that stopped it (the rest go on)."""
        return self._predict_each((path, path) for path in paths)

    def _predict_each(
        self, items: Iterable[tuple[Key, ImageSource]]
    ) -> Iterator[tuple[Key, list[Prediction] | ImageError]]:
        """(key, image) pairs -> (key, predictions or error), in order, ``batch_size`` at a time."""
        pending: list[tuple[Key, np.ndarray]] = []

        def flush() -> Iterator[tuple[Key, list[Prediction]]]:
            if pending:
                logits = self.engine(self.engine.collate([array for _, array in pending]))
                yield from zip([key for key, _ in pending], top_k(logits, self.engine.labels, self.topk))
                pending.clear()

        for key, image in items:
            try:
                pending.append((key, self.preprocess(image)))
            except ImageError as error:
                yield from flush()
                yield key, error
                continue
            if len(pending) >= self.batch_size:
                yield from flush()
        yield from flush()
