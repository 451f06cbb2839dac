"""``Predictor``: images in, top-k classes out, on any engine (the public inference API).

Preprocessing and labels come from the engine, which reads them from the weights entry or
the exported file, so a model never runs with another source's normalization by accident.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.images import MAX_PIXELS, ImageError, ImageSource, load_image
from . import open_engine
from .base import Engine


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
    them gives a list of results. ``engine``: a name from ``effnet.runtime.ENGINES`` or
    ``auto``; ``engine_options`` go to it (``device``, ``threads``, ...).
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

    def __call__(self, image: ImageSource | list[ImageSource]) -> list[Prediction] | list[list[Prediction]]:
        if isinstance(image, list):
            results: list[list[Prediction]] = []
            for start in range(0, len(image), self.batch_size):
                chunk = image[start : start + self.batch_size]
                results.extend(top_k(self.logits(chunk), self.engine.labels, self.topk))
            return results
        return top_k(self.logits([image]), self.engine.labels, self.topk)[0]

    def predict_files(self, paths: Iterable[str]) -> Iterator[tuple[str, list[Prediction] | ImageError]]:
        """Per file: predictions, or the ``ImageError`` that stopped it (the rest go on)."""
        pending: list[tuple[str, np.ndarray]] = []

        def flush() -> Iterator[tuple[str, list[Prediction]]]:
            if pending:
                logits = self.engine(self.engine.collate([array for _, array in pending]))
                yield from zip([name for name, _ in pending], top_k(logits, self.engine.labels, self.topk))
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
