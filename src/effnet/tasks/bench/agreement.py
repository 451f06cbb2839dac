"""How often a runner's top-1 class agrees with torch fp32 on real photos: the price of
bf16 and int8, shown beside their speed in the same table.

Only the runners that run a file (onnxruntime, OpenVINO) are compared: their numbers come
from another engine, another precision or quantization, while the torch runners run the
reference module itself (the reference port runs random weights). Every runner sees the
same photos, prepared once with the model's own preprocessing at the run's size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ...deploy.quantize.calibration import load_crops, normalize, select_images
from .runners import FILE_SOURCES, RUNNERS, InputFiles

#: Photos compared per model (the top-1 of more moves the percentage by less than a photo).
MAX_PHOTOS = 200
#: Images per forward pass while comparing.
CHUNK = 16


def compares(runner: str) -> bool:
    """True for the runners whose agreement with torch fp32 is measured."""
    return RUNNERS[runner].source in FILE_SOURCES


def top1_agreement(pairs: Iterable[tuple[str, str]], networks: dict[str, Any], sizes: dict[str, int],
                   photos: str, files: InputFiles, threads: int | None = None) -> dict[tuple[str, str], float]:
    """(model, runner) -> the share of ``photos`` on which the runner's top-1 class is torch
    fp32's, for the comparable runners among ``pairs``."""
    import torch

    from ...data.transforms import Preprocessing

    found: dict[tuple[str, str], float] = {}
    inputs: dict[str, np.ndarray] = {}
    reference: dict[str, np.ndarray] = {}
    for model, runner in pairs:
        if not compares(runner) or (model, runner) in found:
            continue
        net, size = networks[model], sizes[model]
        if model not in inputs:
            entry = getattr(net, "pretrained_cfg", None)
            recipe = (entry.preprocessing if entry else Preprocessing(size=size)).with_size(size)
            crops, _, _ = load_crops(select_images(photos, MAX_PHOTOS, role="agreement"), recipe, role="agreement")
            inputs[model] = normalize(crops, recipe).astype(np.float32)
            with torch.inference_mode():
                reference[model] = np.concatenate([net(torch.from_numpy(chunk)).numpy()
                                                   for chunk in _chunks(inputs[model])]).argmax(1)
        engine = RUNNERS[runner].file_engine(net, size, threads, files)
        top1 = np.concatenate([engine(chunk) for chunk in _chunks(inputs[model])]).argmax(1)
        found[model, runner] = float((top1 == reference[model]).mean())
    return found


def _chunks(array: np.ndarray) -> list[np.ndarray]:
    return [array[start:start + CHUNK] for start in range(0, len(array), CHUNK)]
