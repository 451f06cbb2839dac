"""The images a run learns its activation ranges from, and those it reports on.

Calibration images come from any folder (spread over its sorted listing, unreadable files
skipped and listed); the evaluation set is ``data.datasets.load_eval_set``'s (class folders
or a label file give accuracy, a flat folder agreement only). Both are prepared with the
model's own preprocessing, read from its ONNX metadata.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

from ..._progress import progress as progress_bar
from ...data.datasets import EvalSet, LabelResolver, load_eval_set
from ...data.images import ImageError, find_images, load_image
from ...data.labels import resolve_labels
from ...data.transforms import Preprocessing
from .recipe import QuantizeError, Settings
from .scales import CALIBRATION_METHODS
from .sessions import session


# -- images -------------------------------------------------------------------------------
def select_images(folder: str | os.PathLike, num_images: int, role: str = "calibration") -> list[Path]:
    """Up to ``num_images`` image files from ``folder``, spread evenly over its sorted listing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise QuantizeError(f"{folder}: {role} folder not found")
    paths = find_images(folder)
    if not paths:
        raise QuantizeError(f"{folder}: no images in the {role} folder (looked for .jpg, .png, .bmp, .webp, .tif ...)")
    if len(paths) > num_images:
        picks = np.linspace(0, len(paths) - 1, num_images).round().astype(int)
        paths = [paths[i] for i in picks]
    return paths


def load_crops(paths: Sequence[Path], preprocessing: Preprocessing, role: str = "calibration",
               progress: bool = False) -> tuple[np.ndarray, list[Path], list[str]]:
    """Decode and resize/crop every image (uint8, N x S x S x 3).

    Unreadable files are skipped and listed (a folder of real photos usually has a few); only
    a folder where none can be read is an error.
    """
    crops, used, failures = [], [], []
    for path in progress_bar(paths, desc=f"reading {role} images", unit="img", enabled=progress):
        try:
            crops.append(preprocessing.resize_crop(load_image(path)))
            used.append(path)
        except ImageError as error:
            failures.append(str(error))
    if not crops:
        listed = "; ".join(failures[:2])
        raise QuantizeError(f"none of the {len(paths)} {role} images can be read ({listed})")
    return np.stack(crops), used, failures


def normalize(crops: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """Resized crops -> the network's float input (the rest of the preprocessing)."""
    return np.stack([preprocessing.normalize(c) for c in crops])


def calibration_inputs(folder: str | os.PathLike, num_images: int, preprocessing: Preprocessing,
                       progress: bool = False) -> tuple[np.ndarray, list[Path], list[str]]:
    """Up to ``num_images`` images of ``folder`` as network inputs, the files used, and the
    errors of those that could not be read."""
    crops, used, failures = load_crops(select_images(folder, num_images), preprocessing, progress=progress)
    return normalize(crops, preprocessing), used, failures


def load_evaluation(folder: str | os.PathLike, labels_file: str | os.PathLike | None,
                    metadata: dict[str, Any]) -> EvalSet:
    """The images to compare fp32 and int8 on, with their classes when known (a label file in
    ``effnet eval``'s format, or class sub-folders; a flat folder gives agreement only)."""
    num_classes = int(metadata.get("num_classes", 1000))
    names = resolve_labels(metadata.get("labels", "imagenet1k"), num_classes)
    resolver = LabelResolver(num_classes=num_classes, class_names=names)
    return load_eval_set(folder, resolver, labels_file, allow_unlabelled=True)


def evaluation_inputs(evaluation: EvalSet, preprocessing: Preprocessing, progress: bool = False
                      ) -> tuple[np.ndarray, list[tuple[int, ...]] | None, int]:
    """The evaluation images as network inputs, the classes of those that could be read (None
    when unlabelled), and how many could not be read."""
    crops, used, failures = load_crops(evaluation.paths, preprocessing, role="evaluation", progress=progress)
    targets = evaluation.targets
    if targets is not None:
        kept = set(used)
        targets = [target for path, target in zip(evaluation.paths, targets) if path in kept]
    return normalize(crops, preprocessing), targets, len(failures)


# -- activation ranges ------------------------------------------------------------------
class _Batches:
    """The ``CalibrationDataReader`` protocol over a list of ready batches."""

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.feeds = iter([{input_name: batch} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


def calibrate(model_path: Path, inputs: np.ndarray, settings: Settings, cache: Path, batch_size: int = 8,
              progress: bool = False) -> None:
    """Activation ranges over the calibration images, saved to ``cache`` for every later
    ``quantize_static`` call (the sensitivity analysis quantizes the model once per layer).

    Batches are fed one per ``collect_data`` call so the histogram methods merge as they go
    instead of holding every activation of every image in memory.
    """
    # Percentile defaults to ranges symmetric around 0, which wastes half of a uint8 range on
    # ReLU6/SiLU outputs that are almost all positive.
    options = {"symmetric": False} if settings.method != "minmax" else {}
    input_name = session(model_path, optimize=False).get_inputs()[0].name
    starts = range(0, len(inputs), batch_size)
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(model_path, list(settings.op_types),
                                       augmented_model_path=str(cache.with_suffix(".augmented.onnx")),
                                       calibrate_method=CALIBRATION_METHODS[settings.method], extra_options=options)
        for start in progress_bar(starts, desc=f"calibrating ({settings.method})", unit="batch",
                                  enabled=progress):
            calibrator.collect_data(_Batches(input_name, [inputs[start : start + batch_size]]))
        save_tensors_data(calibrator.compute_data(), cache)
    cache.with_suffix(".augmented.onnx").unlink(missing_ok=True)
