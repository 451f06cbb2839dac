"""The onnxruntime engine: an exported ``.onnx`` file is all it needs, and torch is never imported.

An effnet ONNX file carries its own metadata (architecture, weights, padding, preprocessing,
labels, input layout) as ``metadata_props``, so loading reads nothing else. Files written
with ``--with-preprocessing`` take decoded uint8 images (NHWC, any size) and resize, crop and
normalize inside the graph; for them ``preprocessing`` passes images through untouched and
the engine groups same-sized images into one run.

Only numpy, onnxruntime and effnet's torch-free modules (``data``, ``errors``, and
``models.variants`` for model names) are imported here: a machine that deploys an ``.onnx``
file does not need torch installed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.labels import resolve_labels
from ..data.transforms import Preprocessing
from ..errors import EffnetError, UsageError
from .base import Engine
from .onnx_metadata import INPUT_BGR, INPUT_FLOAT, INPUT_LAYOUTS, INPUT_RGB, decode


class OnnxModelError(EffnetError, ValueError):
    """A file onnxruntime cannot use as an effnet classifier (not ONNX, wrong opset, ...)."""


def open_session(path: str | os.PathLike | bytes, threads: int | None = None, optimize: bool = True,
                 stop_spinning: bool = False) -> Any:
    """An onnxruntime CPU session with full graph optimization; one-line errors for bad files.

    ``path`` is a file, or a serialized model (``bytes``) for graphs built in memory.
    ``threads`` sets intra-op parallelism (None: onnxruntime's default, one per core).
    ``stop_spinning``: the worker threads stop busy-waiting as soon as a run ends, for
    processes that keep several sessions and run them in turn (an idle session's spinning
    threads otherwise take CPU from the one running).
    """
    import onnxruntime as ort

    source = path if isinstance(path, bytes) else str(path)
    name = "the in-memory model" if isinstance(path, bytes) else source
    if not isinstance(path, bytes) and not Path(path).is_file():
        raise OnnxModelError(f"{path}: ONNX file not found")
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    if threads is not None:
        if threads < 1:
            raise UsageError("--threads must be at least 1")
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if stop_spinning:
        options.add_session_config_entry("session.force_spinning_stop", "1")
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise OnnxModelError(f"{name}: onnxruntime cannot load this model ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


@dataclass(frozen=True)
class PassThrough(Preprocessing):
    """Preprocessing for graphs that do it themselves: decoded images go in unchanged.

    The fields still describe the recipe the graph applies (for reports and metadata).
    """

    def resize_crop(self, image: np.ndarray) -> np.ndarray:
        return image

    def normalize(self, image: np.ndarray) -> np.ndarray:
        return image

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image


@dataclass
class OnnxRuntimeEngine(Engine):
    """An onnxruntime session behind the ``Engine`` interface.

    ``engine(batch)`` takes a preprocessed NCHW float32 batch for plain graphs; for graphs
    with in-graph preprocessing it takes uint8 HxWx3 images (a stacked array or a list of
    differently sized ones).
    """

    session: Any = field(default=None, repr=False)
    path: str = ""
    input_layout: str = INPUT_FLOAT
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: Any = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> "OnnxRuntimeEngine":
        """``OnnxRuntimeEngine.load(None, "model.onnx")``: the file names its architecture.

        ``model``, when given, must agree with the file. ``device``: ``cpu`` only (the CPU
        execution provider). ``threads``: intra-op threads.
        """
        if weights in (None, "default") or not str(weights).lower().endswith(".onnx"):
            raise UsageError("the onnxruntime engine needs an exported model: --weights model.onnx "
                             "(create one with `effnet export`)")
        if device.split(":")[0] != "cpu":
            raise UsageError(f"--device {device}: the onnxruntime engine runs on the CPU only "
                             "(--engine torch runs on a GPU)")
        session = open_session(weights, threads=threads)
        metadata = decode(session.get_modelmeta().custom_metadata_map)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise OnnxModelError(f"{weights}: expected one input and a logits output, "
                                 f"found {len(inputs)} inputs and {len(outputs)} outputs")
        arch = str(metadata.get("arch", "unknown"))
        if model is not None and arch != "unknown" and _canonical(model) != arch:
            raise UsageError(f"{weights} holds {arch}, not {model}")
        layout = str(metadata.get("input", _guess_layout(inputs[0])))
        if layout not in INPUT_LAYOUTS:
            raise OnnxModelError(f"{weights}: unknown input layout '{layout}'")
        recipe = Preprocessing.from_dict(metadata.get("preprocessing") or {"size": _static_size(inputs[0])})
        preprocessing = recipe if layout == INPUT_FLOAT else PassThrough(**recipe.to_dict())
        num_classes = _num_classes(outputs[0], metadata)
        labels = resolve_labels(metadata.get("labels", "imagenet1k"), num_classes)
        return cls(
            name="onnxruntime", arch=arch, preprocessing=preprocessing, labels=labels,
            session=session, path=str(weights), input_layout=layout, metadata=metadata,
        )

    @property
    def weights_name(self) -> str:
        return str(self.metadata.get("weights") or self.path)

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def takes_images(self) -> bool:
        """True when the graph does its own preprocessing (uint8 NHWC input)."""
        return self.input_layout != INPUT_FLOAT

    def __call__(self, batch: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if not self.takes_images:
            array = np.ascontiguousarray(batch, dtype=np.float32)
            return self.session.run(None, {self.input_name: array})[0]
        if isinstance(batch, np.ndarray):
            images = [batch] if batch.ndim == 3 else list(batch)
        else:
            images = list(batch)
        logits: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(image.shape, []).append(index)
        for indices in groups.values():
            stacked = np.stack([images[i] for i in indices])
            if self.input_layout == INPUT_BGR:
                stacked = stacked[..., ::-1]  # images arrive as RGB (load_image); the graph wants BGR
            stacked = np.ascontiguousarray(stacked, dtype=np.uint8)
            for i, row in zip(indices, self.session.run(None, {self.input_name: stacked})[0]):
                logits[i] = row
        return np.stack(logits)  # type: ignore[arg-type]


def _canonical(name: str) -> str:
    from ..models.variants import canonical_name  # pure Python: no torch

    return canonical_name(name)


def _guess_layout(node: Any) -> str:
    return INPUT_RGB if node.type == "tensor(uint8)" else INPUT_FLOAT


def _static_size(node: Any) -> int:
    height = node.shape[2] if len(node.shape) == 4 else None
    return height if isinstance(height, int) else 224


def _num_classes(node: Any, metadata: Mapping[str, Any]) -> int:
    if isinstance(node.shape[-1], int):
        return node.shape[-1]
    return int(metadata.get("num_classes", 1000))
