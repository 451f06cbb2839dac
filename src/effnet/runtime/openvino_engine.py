"""The OpenVINO engine: an effnet ``.onnx`` export or an OpenVINO IR (``.xml``) on the CPU.

OpenVINO reads an ONNX file's ``metadata_props`` into the model's ``rt_info["framework"]``
and keeps them when it saves an IR, so both kinds of file carry effnet's metadata
(architecture, preprocessing, labels, how it was quantized) and are read the same way as by
the onnxruntime engine (``exported_file.file_facts``). Only numpy, openvino and effnet's
torch-free modules are imported here.

Compilation settings, and why (measured on a 2-core AVX512-VNNI/BF16 EPYC):

- ``INFERENCE_PRECISION_HINT`` is always set: ``f32`` for ``fp32`` (and for the float parts of
  an int8 file), ``bf16`` for ``bf16``. Unset, OpenVINO silently computes in bf16 on CPUs
  with AVX512-BF16 or AMX, and the answers are no longer torch's.
- The input's height and width are pinned to the file's preprocessing size before
  compiling: a fixed shape lets OpenVINO fold the TF-"same" padding arithmetic and pick
  its kernels once. The batch axis stays dynamic unless ``batch`` pins it.
- ``PERFORMANCE_HINT`` ``LATENCY`` for one image at a time, ``THROUGHPUT`` for a pinned
  batch above one; ``ENABLE_CPU_PINNING`` off, since other processes share the cores;
  ``INFERENCE_NUM_THREADS`` is ``threads``.

int8 needs calibration images, which a runtime engine has no place for (and ``deploy``'s
calibration code sits a floor above ``runtime``): an int8 file is made once by
``deploy.quantize.openvino.quantize_openvino`` (``effnet quantize --engine openvino``;
``effnet bench``'s ``openvino-int8`` row makes one the same way) and this engine runs it. ``--precision int8`` on a float file says so.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EffnetError, UsageError
from .base import FileEngine, run_in_fixed_batches
from .exported_file import file_facts
from .onnx_metadata import INPUT_FLOAT, read_metadata

#: What ``--precision`` accepts; fp32 is the default everywhere and gives torch's answers.
PRECISIONS = ("fp32", "bf16", "int8")
#: The files this engine runs.
SUFFIXES = (".onnx", ".xml")
#: ``effnet.quantization["engine"]`` of an int8 file made for OpenVINO.
QUANTIZED_FOR = "openvino"


class OpenVinoModelError(EffnetError, ValueError):
    """A file OpenVINO cannot use as an effnet classifier."""


@dataclass
class OpenVinoEngine(FileEngine):
    """A compiled OpenVINO model behind the ``Engine`` interface (float32 NCHW batches in).

    Each calling thread gets its own infer request (``serve --workers N`` calls one engine
    from several threads; a request is not safe to share).
    """

    compiled: Any = field(default=None, repr=False)
    precision: str = "fp32"
    #: the batch size the model was compiled for, or None for any
    batch: int | None = None
    _local: threading.local = field(default_factory=threading.local, repr=False)

    @classmethod
    def load(
        cls,
        model: str | None = None,
        weights: Any = None,
        device: str = "cpu",
        threads: int | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        precision: str | None = None,
        batch: int | None = None,
    ) -> "OpenVinoEngine":
        """``OpenVinoEngine.load(None, "model.onnx", precision="bf16")``: the file names its
        architecture.

        ``model``, when given, must agree with the file. ``device``: ``cpu``. ``threads``:
        threads inside one inference (None: OpenVINO's own). ``preprocessing``: fields of
        ``Preprocessing.with_overrides`` replacing what the file says (``size`` changes the
        shape the model is compiled for). ``precision``: ``fp32``, ``bf16`` (CPUs with native
        bf16 only) or ``int8`` (a file quantized for OpenVINO); None runs the file as it is
        (an int8 file in int8, anything else in fp32). ``batch``: compile for this batch size
        only (others are split or padded to it).
        """
        cls.check_options("openvino", weights, SUFFIXES, "--weights model.onnx (from `effnet export`) or an "
                          "OpenVINO IR model.xml", device, threads)
        if batch is not None and batch < 1:
            raise UsageError("the batch size must be at least 1")
        import openvino as ov

        core = ov.Core()
        network = read_model(core, weights)
        metadata = file_metadata(network)
        side = _check_classifier(weights, network, metadata)
        num_classes = _num_classes(network, metadata)
        facts = file_facts(weights, model, metadata, INPUT_FLOAT, side, num_classes, preprocessing)
        chosen = _precision(weights, metadata, precision, core)
        size = facts.preprocessing.size
        network.reshape({network.inputs[0]: ov.PartialShape([batch or -1, 3, size, size])})
        compiled = core.compile_model(network, "CPU", compile_settings(chosen, threads, batch))
        return cls(name="openvino", arch=facts.arch, preprocessing=facts.preprocessing, labels=facts.labels,
                   compiled=compiled, path=str(weights), precision=chosen, batch=batch, metadata=metadata)

    def _request(self) -> Any:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = self._request()
        return run_in_fixed_batches(lambda run: np.array(request.infer({0: run})[0], dtype=np.float32),
                                    np.ascontiguousarray(batch, dtype=np.float32), self.batch)


def read_model(core: Any, path: str | os.PathLike) -> Any:
    """The model in ``path`` (``.onnx``, or ``.xml`` with its ``.bin``); one-line errors."""
    if not Path(path).is_file():
        raise OpenVinoModelError(f"{path}: model file not found")
    try:
        return core.read_model(str(path))
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line texts
        text = str(exc).strip()
        reason = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise OpenVinoModelError(f"{path}: OpenVINO cannot read this model ({reason[:300]})") from None


def file_metadata(network: Any) -> dict[str, Any]:
    """The effnet metadata of a model OpenVINO read: the ONNX ``metadata_props`` it keeps in
    ``rt_info["framework"]`` (also in an IR saved from it)."""
    if not network.has_rt_info(["framework"]):
        return {}
    framework = network.get_rt_info()["framework"]
    return read_metadata({str(key): value.astype(str) for key, value in framework.items()})


def set_file_metadata(network: Any, values: Mapping[str, Any]) -> None:
    """Add effnet metadata entries to ``network`` (saved with it in an IR)."""
    from .onnx_metadata import encode

    for key, value in encode(values).items():
        network.set_rt_info(value, ["framework", key])


def compile_settings(precision: str, threads: int | None, batch: int | None) -> dict[str, Any]:
    """The CPU plugin's settings for a precision, thread count and batch (module docstring)."""
    import openvino.properties as props
    import openvino.properties.hint as hints

    mode = hints.PerformanceMode.THROUGHPUT if batch and batch > 1 else hints.PerformanceMode.LATENCY
    settings: dict[str, Any] = {
        hints.inference_precision: "bf16" if precision == "bf16" else "f32",
        hints.performance_mode: mode,
        hints.enable_cpu_pinning: False,
    }
    if threads is not None:
        settings[props.inference_num_threads] = threads
    return settings


def is_int8(metadata: Mapping[str, Any]) -> bool:
    """True for a file quantized for OpenVINO (``deploy.quantize.openvino``)."""
    quantization = metadata.get("quantization")
    return isinstance(quantization, Mapping) and quantization.get("engine") == QUANTIZED_FOR


def native_bf16(core: Any) -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX), as OpenVINO reports."""
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _precision(path: Any, metadata: Mapping[str, Any], precision: str | None, core: Any) -> str:
    """The precision to compile for, or a one-line refusal saying what to do instead."""
    quantized = is_int8(metadata)
    if precision is None:
        return "int8" if quantized else "fp32"
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if quantized and precision != "int8":
        source = metadata["quantization"].get("source") or "the float file it was made from"
        raise UsageError(f"{path} is quantized to int8: --precision {precision} needs a float file ({source})")
    if precision == "int8" and not quantized:
        raise UsageError(f"--precision int8 runs a file quantized for OpenVINO, and {path} is float: make one with "
                         "`effnet quantize model.onnx --engine openvino --calib DIR -o model.int8.xml`, then "
                         "--weights model.int8.xml")
    if precision == "bf16" and not native_bf16(core):
        raise UsageError("--precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so OpenVINO would "
                         "compute in fp32; use --precision fp32 or int8")
    return precision


def _check_classifier(path: Any, network: Any, metadata: Mapping[str, Any]) -> int | None:
    """The fixed input side of a float32 NCHW classifier (None: dynamic), or one error that
    says what the graph has. Graphs with in-graph preprocessing (uint8 images of any size)
    are onnxruntime's: OpenVINO compiles for one fixed shape."""
    import openvino as ov

    layout = str(metadata.get("input", INPUT_FLOAT))
    if layout != INPUT_FLOAT:
        raise UsageError(f"{path} preprocesses images inside the graph (exported --with-preprocessing): run it with "
                         "--engine onnxruntime, or export without --with-preprocessing for OpenVINO")
    inputs, outputs = network.inputs, network.outputs
    if len(inputs) == 1 and len(outputs) == 1:
        shape, element = inputs[0].get_partial_shape(), inputs[0].get_element_type()
        if (shape.rank.is_static and len(shape) == 4 and element == ov.Type.f32
                and outputs[0].get_partial_shape().rank.is_static and len(outputs[0].get_partial_shape()) == 2):
            channels, height, width = shape[1], shape[2], shape[3]
            if (channels.is_dynamic or channels.get_length() == 3) and (
                    height.is_dynamic or width.is_dynamic or height.get_length() == width.get_length()):
                return height.get_length() if height.is_static else None
    described = ", ".join(f"{port.get_any_name()} {port.get_partial_shape()} {port.get_element_type().get_type_name()}"
                          for port in (*inputs, *outputs))
    raise OpenVinoModelError(f"{path} is not an image classifier effnet can run: it needs one N,3,H,W float32 "
                             f"input and one (N, classes) output, and has {described}")


def _num_classes(network: Any, metadata: Mapping[str, Any]) -> int:
    last = network.outputs[0].get_partial_shape()[-1]
    return last.get_length() if last.is_static else int(metadata.get("num_classes", 1000))
