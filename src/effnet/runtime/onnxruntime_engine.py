"""The onnxruntime engine: an exported ``.onnx`` file is all it needs, and torch is never imported.

An effnet ONNX file carries its own metadata (architecture, weights, padding, preprocessing,
labels, input layout) as ``metadata_props``, so loading reads nothing else. Files written
with ``--with-preprocessing`` take decoded uint8 images (NHWC, any size) and resize, crop and
normalize inside the graph; for them ``preprocessing`` passes images through untouched and
the engine groups same-sized images into one run. Files exported with ``--input nv12`` take
NV12 frames of one fixed size: the engine scales each decoded photo to cover that frame
(aspect ratio kept, centre cut, as a camera frames a scene) and converts it to NV12
(``data.nv12``), so ``effnet predict --weights x.onnx photo.jpg`` runs them too.

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

from ..errors import EffnetError, UsageError
from .base import FileEngine, run_in_fixed_batches
from .exported_file import file_facts
from .onnx_metadata import INPUT_BGR, INPUT_FLOAT, INPUT_LAYOUTS, INPUT_NV12, INPUT_RGB, decode


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


@dataclass
class OnnxRuntimeEngine(FileEngine):
    """An onnxruntime session behind the ``Engine`` interface.

    ``engine(batch)`` takes a preprocessed NCHW float32 batch for plain graphs; for graphs
    with in-graph preprocessing it takes uint8 HxWx3 images (a stacked array or a list of
    differently sized ones).
    """

    session: Any = field(default=None, repr=False)
    input_layout: str = INPUT_FLOAT

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: Any = None,
        device: str = "cpu",
        threads: int | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        stop_spinning: bool = False,
    ) -> "OnnxRuntimeEngine":
        """``OnnxRuntimeEngine.load(None, "model.onnx")``: the file names its architecture.

        ``model``, when given, must agree with the file. ``device``: ``cpu`` only (the CPU
        execution provider). ``threads``: intra-op threads. ``preprocessing``: fields of
        ``Preprocessing.with_overrides`` replacing what the file says, or what is guessed for
        a file without effnet metadata (a warning names the guess when nothing is given).
        ``stop_spinning``: see ``open_session`` (for processes that run several sessions in turn).
        """
        cls.check_options("onnxruntime", weights, (".onnx",), "--weights model.onnx (create one with `effnet export`)",
                          device, threads)
        session = open_session(weights, threads=threads, stop_spinning=stop_spinning)
        metadata = decode(session.get_modelmeta().custom_metadata_map)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        layout = _classifier_layout(weights, inputs, outputs, metadata)
        side = _static_side(inputs[0]) if layout == INPUT_FLOAT else None
        facts = file_facts(weights, model, metadata, layout, side, _num_classes(outputs[0], metadata), preprocessing)
        arch, recipe, labels = facts.arch, facts.preprocessing, facts.labels
        return cls(
            name="onnxruntime", arch=arch, preprocessing=recipe, labels=labels,
            session=session, path=str(weights), input_layout=layout, metadata=metadata,
        )

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def takes_images(self) -> bool:
        """True when the graph does its own preprocessing (uint8 NHWC input)."""
        return self.input_layout != INPUT_FLOAT

    def __call__(self, batch: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if not self.takes_images:
            return self._run(np.ascontiguousarray(batch, dtype=np.float32))
        if isinstance(batch, np.ndarray):
            images = [batch] if batch.ndim == 3 else list(batch)
        else:
            images = list(batch)
        logits: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(image.shape, []).append(index)
        if self.input_layout == INPUT_NV12:
            return self._run(np.stack([self.nv12_frame(image) for image in images]))
        for indices in groups.values():
            stacked = np.stack([images[i] for i in indices])
            if self.input_layout == INPUT_BGR:
                stacked = stacked[..., ::-1]  # images arrive as RGB (load_image); the graph wants BGR
            stacked = np.ascontiguousarray(stacked, dtype=np.uint8)
            for i, row in zip(indices, self._run(stacked)):
                logits[i] = row
        return np.stack(logits)  # type: ignore[arg-type]

    def _run(self, array: np.ndarray) -> np.ndarray:
        """The graph's logits for ``array``. A file with a fixed batch (``effnet export --batch N``:
        NPU-style files fix it) takes any number of rows, in runs of N (``run_in_fixed_batches``)."""
        fixed = self.session.get_inputs()[0].shape[0]
        return run_in_fixed_batches(lambda run: self.session.run(None, {self.input_name: run})[0], array,
                                    fixed if isinstance(fixed, int) else None)

    def nv12_frame(self, image: np.ndarray) -> np.ndarray:
        """A decoded RGB photo as one NV12 frame of the file's size (``data.nv12.fit_frame``)."""
        from ..data.nv12 import fit_frame, rgb_to_nv12

        settings = self.metadata.get("nv12") or {}
        shape = self.session.get_inputs()[0].shape
        height, width = int(settings.get("height", shape[1] * 2 // 3)), int(settings.get("width", shape[2]))
        return rgb_to_nv12(fit_frame(image, height, width), settings.get("range", "video"))


def _guess_layout(node: Any) -> str:
    return INPUT_RGB if node.type == "tensor(uint8)" else INPUT_FLOAT


def _classifier_layout(path: Any, inputs: Sequence[Any], outputs: Sequence[Any], metadata: Mapping[str, Any]) -> str:
    """The input layout of a graph effnet can run as a classifier: one image input (float32
    NCHW with 3 channels, or uint8 NHWC images) and one (N, classes) output. Anything else (a
    segmentation or image-to-image graph, a grey-digit model, several heads) is one error that
    says what the graph has, instead of a failure deep in decoding or scoring."""
    if len(inputs) == 1 and len(outputs) == 1:
        layout = str(metadata.get("input", _guess_layout(inputs[0])))
        if layout not in INPUT_LAYOUTS:
            raise OnnxModelError(f"{path}: unknown input layout '{layout}'")
        if _takes_rgb_images(inputs[0], layout) and len(outputs[0].shape) == 2:
            return layout
    raise OnnxModelError(
        f"{path} is not an image classifier effnet can run: it needs one image input (N,3,H,W float32 or "
        f"N,H,W,3 uint8) and one (N, classes) output, and has {_describe('input', inputs, True)} and "
        f"{_describe('output', outputs, False)}"
    )


def _takes_rgb_images(node: Any, layout: str) -> bool:
    """Rank 4 with 3 channels (a named dimension may be 3), square when fixed (the
    preprocessing makes square crops), and the element type the layout says."""
    shape = node.shape
    if layout == INPUT_NV12:
        return node.type == "tensor(uint8)" and len(shape) == 3
    if len(shape) != 4:
        return False
    if layout == INPUT_FLOAT:
        height, width = shape[2], shape[3]
        fixed = isinstance(height, int) and isinstance(width, int)
        return node.type == "tensor(float)" and _may_be_three(shape[1]) and (not fixed or height == width)
    return node.type == "tensor(uint8)" and _may_be_three(shape[3])


def _may_be_three(dimension: Any) -> bool:
    return dimension == 3 or not isinstance(dimension, int)


#: onnxruntime's element types as numpy names, for error messages
_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
          "tensor(uint8)": "uint8", "tensor(int8)": "int8", "tensor(int64)": "int64"}


def _describe(kind: str, nodes: Sequence[Any], with_type: bool) -> str:
    """``input image [1, 3, 224, 224] float32``, or ``2 inputs (a [...] float32, b [...] float32)``."""
    parts = [f"{node.name} [{', '.join(str(d) for d in node.shape)}]"
             + (f" {_TYPES.get(node.type, node.type)}" if with_type else "") for node in nodes]
    if len(parts) == 1:
        return f"{kind} {parts[0]}"
    return f"{len(parts)} {kind}s ({', '.join(parts)})"


def _static_side(node: Any) -> int | None:
    """The fixed input side of a float32 NCHW graph, or None for a dynamic one."""
    height = node.shape[2]
    return height if isinstance(height, int) else None


def _num_classes(node: Any, metadata: Mapping[str, Any]) -> int:
    if isinstance(node.shape[-1], int):
        return node.shape[-1]
    return int(metadata.get("num_classes", 1000))
