"""The LiteRT engine: a ``.tflite`` file from ``effnet export --format tflite`` in the LiteRT
interpreter (``ai_edge_litert``, XNNPACK on the CPU); torch is never imported.

The file's effnet metadata (``runtime.tflite_metadata``) says its architecture, labels,
preprocessing and input: float32 NHWC (fp32 files and float-input int8 files: the engine
transposes effnet's NCHW batch), or uint8 pixels resized and cropped (Google-style int8
files: the engine's preprocessing stops after the crop, the file normalizes). effnet's files
have batch 1, so a batch runs image by image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._quiet import quiet
from ..data.labels import resolve_labels
from ..data.transforms import Preprocessing
from .base import FileEngine, run_in_fixed_batches
from .tflite_metadata import INPUT_FLOAT_NHWC, INPUT_UINT8_NHWC, TfliteModelError, read_metadata


@dataclass(frozen=True)
class CropOnly(Preprocessing):
    """The weights' resize and crop, no normalization: uint8 pixels for files that normalize
    inside (the fields still describe the file's whole recipe)."""

    def normalize(self, image: np.ndarray) -> np.ndarray:
        return image

    def __call__(self, image: np.ndarray, source_size: tuple[int, int] | None = None) -> np.ndarray:
        return self.resize_crop(image, source_size)


@dataclass
class LiteRtEngine(FileEngine):
    """A LiteRT interpreter behind the ``Engine`` interface: NCHW float32 batches (or uint8
    NHWC crops for uint8 files) in, float32 logits out."""

    interpreter: Any = field(default=None, repr=False)
    input_layout: str = INPUT_FLOAT_NHWC

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: Any = None,
        device: str = "cpu",
        threads: int | None = None,
        preprocessing: Mapping[str, Any] | None = None,
    ) -> "LiteRtEngine":
        """``LiteRtEngine.load(None, "model.tflite")``: the file names its architecture.

        ``model``, when given, must agree with the file; ``device``: ``cpu`` only;
        ``threads``: the interpreter's threads (None: every CPU this process may use, as
        onnxruntime and ExecuTorch do; LiteRT's own default is one thread).
        """
        from ai_edge_litert.interpreter import Interpreter

        cls.check_options("litert", weights, (".tflite",), "--weights model.tflite (create one with `effnet export "
                          "--format tflite`)", device, threads)
        cls.refuse_overrides(weights, preprocessing, "a TFLite file")
        metadata = read_metadata(weights)
        if not metadata:
            raise TfliteModelError(f"{weights} has no effnet metadata: export it with `effnet export --format tflite`")
        try:
            with quiet():  # LiteRT's C++ announces its XNNPACK delegate on stderr at every load
                interpreter = Interpreter(model_path=str(weights),
                                          num_threads=threads or len(os.sched_getaffinity(0)))
                interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise TfliteModelError(f"{weights}: LiteRT cannot load this model ({str(exc).strip()[:300]})") from None
        arch = str(metadata.get("arch", "unknown"))
        cls.check_arch(weights, model, arch)
        layout = str(metadata.get("input", INPUT_FLOAT_NHWC))
        recipe = Preprocessing.from_dict(metadata["preprocessing"])
        if layout == INPUT_UINT8_NHWC:
            recipe = CropOnly(**recipe.to_dict())
        output = interpreter.get_output_details()[0]
        labels = resolve_labels(metadata.get("labels", "imagenet1k"), int(output["shape"][-1]))
        return cls(name="litert", arch=arch, preprocessing=recipe, labels=labels, interpreter=interpreter,
                   path=str(weights), input_layout=layout, metadata=metadata)

    @property
    def takes_images(self) -> bool:
        """uint8 files take resized, cropped uint8 NHWC crops (``preprocessing`` makes them)."""
        return self.input_layout == INPUT_UINT8_NHWC

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if self.takes_images:
            rows = np.ascontiguousarray(batch.reshape(-1, *batch.shape[-3:]), dtype=np.uint8)
        else:
            rows = np.ascontiguousarray(batch.transpose(0, 2, 3, 1), dtype=np.float32)
        return run_in_fixed_batches(self._invoke, rows, 1)  # effnet's .tflite files have batch 1

    def _invoke(self, row: np.ndarray) -> np.ndarray:
        self.interpreter.set_tensor(self.interpreter.get_input_details()[0]["index"], row)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.interpreter.get_output_details()[0]["index"]).copy()
