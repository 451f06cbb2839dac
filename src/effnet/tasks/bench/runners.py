"""What ``effnet bench`` can time: one small ``Runner`` per way of running a model.

A runner says which engine of ``runtime.ENGINES`` runs the model, the options it opens that
engine with, and how the engine's input is made: the module itself (the torch engine), the
file ``deploy.export`` writes (onnxruntime, OpenVINO in fp32 or bf16), or that file quantized
as ``effnet quantize`` does (for onnxruntime, or with ``--engine openvino`` for OpenVINO). Only the reference port is not an engine of ours: it is what users compare with.
Adding a runner is one line in ``RUNNERS``.

Every runner times one forward pass on a batch already where and how its engine takes it:
a numpy array for onnxruntime and OpenVINO, a tensor on the device in the engine's memory format for
torch. Copies in and out are not timed: on a GPU they would measure the bus, not the network.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...data.labels import resolve_labels
from ...data.transforms import Preprocessing
from ...errors import UsageError
from ...runtime import ENGINES, open_engine

#: One timed call; what it returns is kept only by tests (CUDA-graph replays vs eager).
Forward = Callable[[], object]

#: How a runner's engine gets its input: the module, its ONNX export, or that export in int8
#: (for onnxruntime, or as an OpenVINO IR).
MODULE, ONNX_EXPORT, ONNX_INT8, REFERENCE_PORT = "module", "onnx export", "onnx int8", "reference port"
OPENVINO_INT8 = "openvino int8"
#: The sources made from the export (they need the export's packages) and those calibrated on --calib.
#: The files ``effnet export --format tflite`` writes (fp32, and int8 with float input so the
#: timed batch is the same as every other runner's).
TFLITE_EXPORT, TFLITE_INT8 = "tflite export", "tflite int8"
PTE_EXPORT = "executorch export"
FILE_SOURCES = (ONNX_EXPORT, ONNX_INT8, OPENVINO_INT8, TFLITE_EXPORT, TFLITE_INT8, PTE_EXPORT)
CALIBRATED_SOURCES = (ONNX_INT8, OPENVINO_INT8, TFLITE_INT8)

#: Packages ``deploy.export`` needs besides onnxruntime.
EXPORT_PACKAGES = ("onnx", "onnxscript")

#: effnet variant -> (package, name) of the port most PyTorch users run: lukemelas'
#: efficientnet_pytorch for B0-B7 and its Lite sibling for Lite0-4.
REFERENCE_PORTS = {
    **{f"efficientnet_b{i}": ("efficientnet_pytorch", f"efficientnet-b{i}") for i in range(8)},
    **{f"efficientnet_lite{i}": ("efficientnet_lite_pytorch", f"efficientnet-lite{i}") for i in range(5)},
}


@dataclass(frozen=True)
class Calibration:
    """The int8 runners: the folder of calibration images and how many of them to use."""

    folder: str
    images: int = 100


class InputFiles:
    """The ONNX files of one run, each made once per model and size in ``folder`` (one export
    serves every batch size and thread count: its batch axis is dynamic; one int8 file, from
    that export, likewise)."""

    def __init__(self, folder: Path, calibration: Calibration | None = None) -> None:
        self.folder = folder
        self.calibration = calibration
        self._made: dict[tuple[str, str, int], Path] = {}

    def path(self, source: str, net: Any, size: int) -> Path:
        key = (source, net.plan.name, size)
        if key not in self._made:
            self._made[key] = self._make(source, net, size)
        return self._made[key]

    def _make(self, source: str, net: Any, size: int) -> Path:
        # onnx and the quantizer: imported only by runs that time an ONNX file
        from ...deploy.export.onnx import export_network
        from ...deploy.quantize.pipeline import quantize

        stem = f"{net.plan.name}-{size}"
        if source == ONNX_EXPORT:
            return export_network(net, self.folder / f"{stem}.onnx", batch=None, size=size).path
        if source in (TFLITE_EXPORT, TFLITE_INT8, PTE_EXPORT):
            entry = getattr(net, "pretrained_cfg", None)
            native = entry.preprocessing.size if entry else net.plan.eval_resolution
            if size != native:
                raise UsageError(f"the litert and executorch runners time the file at the weights' own size "
                                 f"({native} px), not --size {size}")
        if source == PTE_EXPORT:
            from ...deploy.export.executorch import export_executorch_network  # executorch: only for this runner

            return export_executorch_network(net, self.folder / f"{stem}.pte").path
        if source == TFLITE_EXPORT:
            from ...deploy.export.tflite import export_tflite_network  # litert-torch: only for this runner

            return export_tflite_network(net, self.folder / f"{stem}.tflite").path
        if self.calibration is None:
            raise UsageError("the int8 runners need calibration images: --calib DIR")
        if source == TFLITE_INT8:
            from ...deploy.export.tflite import export_tflite_network

            return export_tflite_network(net, self.folder / f"{stem}.int8.tflite", int8=True,
                                         calibration=self.calibration.folder, num_images=self.calibration.images,
                                         int8_input="float").path
        if source == OPENVINO_INT8:
            from ...deploy.quantize.openvino import quantize_openvino  # nncf: only for this runner

            return quantize_openvino(self.path(ONNX_EXPORT, net, size), self.calibration.folder,
                                     self.folder / f"{stem}.int8.xml", num_images=self.calibration.images, size=size)
        # exactly as `effnet quantize` does by default (sensitivity analysis and all), without its speed report
        return quantize(self.path(ONNX_EXPORT, net, size), self.calibration.folder, self.folder / f"{stem}.int8.onnx",
                        num_images=self.calibration.images, size=size, speed=False).path


@dataclass(frozen=True)
class Runner:
    """One way to run a model: the engine, its options, and where its input comes from."""

    name: str
    summary: str
    #: the ``runtime.ENGINES`` entry behind it; None for the reference port
    engine: str | None
    #: MODULE, REFERENCE_PORT or one of FILE_SOURCES
    source: str = MODULE
    #: the engine's ``precision`` (None: the file's own)
    precision: str | None = None
    device: str = "cpu"
    channels_last: bool = False
    #: CUDA autocast to "fp16" or "bf16"; None computes in fp32
    autocast: str | None = None
    #: capture the forward once as a CUDA graph and replay it (fixed input buffer and shape)
    graph: bool = False
    #: ``torch.compile`` mode ("default", "max-autotune"); None runs eagerly
    compile_mode: str | None = None

    def missing(self) -> str | None:
        """Why this runner cannot run on this machine, or None."""
        if self.engine is None:
            if importlib.util.find_spec("efficientnet_pytorch") is None:
                return "efficientnet_pytorch is not installed (pip install --no-deps efficientnet_pytorch==0.7.1)"
            return None
        reason = ENGINES[self.engine].missing()
        if reason is None and self.source in FILE_SOURCES:
            absent = [package for package in EXPORT_PACKAGES if importlib.util.find_spec(package) is None]
            reason = f"{', '.join(absent)} not installed (pip install onnx onnxruntime onnxscript)" if absent else None
        if reason is None and self.source in (TFLITE_EXPORT, TFLITE_INT8) and (
                importlib.util.find_spec("litert_torch") is None):
            reason = "litert_torch not installed (pip install 'effnet[tflite]')"
        if reason is None and self.source == OPENVINO_INT8 and importlib.util.find_spec("nncf") is None:
            reason = "nncf not installed (pip install 'effnet[openvino]')"
        if reason is None and self.engine == "openvino" and self.precision == "bf16":
            import openvino as ov

            from ...runtime.openvino_engine import native_bf16

            reason = None if native_bf16(ov.Core()) else "this CPU has no native bf16 (AVX512-BF16 or AMX)"
        if reason is None and self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                reason = f"no CUDA device here (torch {torch.__version__})"
        return reason

    def cannot_run(self, model: str) -> str | None:
        """Why this runner cannot run ``model`` (only the reference port exists for some models only)."""
        if self.source != REFERENCE_PORT:
            return None
        package, _ = REFERENCE_PORTS.get(model, (None, None))
        if package is None:
            return f"no reference port of {model} (ports exist for b0-b7 and lite0-4)"
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed"
        return None

    def prepare(self, net: Any, batch_size: int, size: int, threads: int | None = None,
                files: InputFiles | None = None) -> Forward:
        """The timed call for ``net`` at this batch size and input size. ``net`` is left as it
        was (runners convert or compile a copy), so one loaded module serves every runner.
        ``threads``: onnxruntime's intra-op threads (torch's are the caller's, process-wide)."""
        if self.source == REFERENCE_PORT:
            return _reference_forward(net.plan.name, batch_size, size)
        if self.source in FILE_SOURCES:
            engine = self.file_engine(net, size, threads, files, batch_size)
            batch = np.random.default_rng(0).standard_normal((batch_size, 3, size, size), dtype=np.float32)
            return lambda: engine(batch)
        return self._torch_forward(net, batch_size, size)

    def file_engine(self, net: Any, size: int, threads: int | None, files: InputFiles | None,
                    batch_size: int | None = None) -> Any:
        """The engine that runs this runner's file of ``net`` (compiled for ``batch_size``
        where the engine takes one: OpenVINO)."""
        if files is None:
            raise ValueError(f"the {self.name} runner times a file: pass files=InputFiles(...)")
        options: dict[str, Any] = {"threads": threads}
        if self.engine == "openvino":
            options.update(precision=self.precision, batch=batch_size)
        if self.engine == "onnxruntime":  # bench keeps many sessions: an idle one's spinning threads
            options.update(stop_spinning=True)  # slowed the next configuration (LiteRT 5.7 vs 3.4 ms)
        return open_engine(self.engine, None, str(files.path(self.source, net, size)), **options)

    def _torch_forward(self, net: Any, batch_size: int, size: int) -> Forward:
        import torch

        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
        engine = _torch_engine(copy.deepcopy(net), self.device, self.channels_last)
        model = engine.model
        batch = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(engine.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        if self.compile_mode:
            model = torch.compile(model, mode=self.compile_mode, dynamic=False)
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.autocast or "")

        def forward() -> object:
            # autocast's weight cache must be off while capturing a CUDA graph (PyTorch's CUDA graphs notes)
            precision = (torch.autocast(engine.device.type, dtype=dtype, cache_enabled=not self.graph)
                         if dtype is not None else contextlib.nullcontext())
            with torch.inference_mode(), precision:
                return model(batch)

        if engine.device.type != "cuda":
            return forward
        if self.graph:
            return _cuda_graph(forward)

        def synchronized() -> object:
            output = forward()
            torch.cuda.synchronize()
            return output

        return synchronized


#: Every runner, by name. Default runs time the first two.
RUNNERS: dict[str, Runner] = {runner.name: runner for runner in (
    Runner("reference", "the reference port users compare with: efficientnet_pytorch (B0-B7) or "
           "efficientnet_lite_pytorch (Lite0-4), eager NCHW", None, REFERENCE_PORT),
    Runner("torch", "PyTorch eager, NCHW (the default memory format)", "torch"),
    Runner("torch-cl", "PyTorch eager, channels_last (what effnet predict uses)", "torch", channels_last=True),
    Runner("torch-compile", "torch.compile (inductor), channels_last; compile time is in first_call_s", "torch",
           channels_last=True, compile_mode="default"),
    Runner("onnx", "ONNX Runtime fp32, the graph effnet export writes (also named onnxruntime or ort)", "onnxruntime",
           ONNX_EXPORT),
    Runner("onnx-int8", "ONNX Runtime int8, quantized as `effnet quantize` does (needs --calib DIR)", "onnxruntime",
           ONNX_INT8),
    Runner("openvino", "OpenVINO fp32 (f32 precision hint) on the graph effnet export writes", "openvino", ONNX_EXPORT,
           precision="fp32"),
    Runner("openvino-bf16", "OpenVINO bf16 on the same graph (CPUs with native bf16: AVX512-BF16 or AMX)",
           "openvino", ONNX_EXPORT, precision="bf16"),
    Runner("openvino-int8", "OpenVINO int8, quantized with NNCF as `effnet quantize --engine openvino` does "
           "(needs --calib DIR)", "openvino", OPENVINO_INT8, precision="int8"),
    Runner("litert", "LiteRT (TFLite, XNNPACK) fp32 on the file `effnet export --format tflite` writes (batch 1 "
           "files: a batch runs image by image)", "litert", TFLITE_EXPORT),
    Runner("litert-int8", "LiteRT int8 (per-channel, float input), `effnet export --format tflite --int8` "
           "(needs --calib DIR)", "litert", TFLITE_INT8),
    Runner("executorch", "ExecuTorch (XNNPACK delegate) fp32 on the program `effnet export --format executorch` "
           "writes (batch 1: a batch runs image by image)", "executorch", PTE_EXPORT),
    Runner("cuda", "CUDA fp32, channels_last", "torch", device="cuda", channels_last=True),
    Runner("cuda-fp16", "CUDA fp16 autocast, channels_last", "torch", device="cuda", channels_last=True,
           autocast="fp16"),
    Runner("cuda-bf16", "CUDA bf16 autocast, channels_last", "torch", device="cuda", channels_last=True,
           autocast="bf16"),
    Runner("cuda-graph", "CUDA fp16 autocast replayed as one CUDA graph (small batches)", "torch", device="cuda",
           channels_last=True, autocast="fp16", graph=True),
    Runner("cuda-compile", "torch.compile max-autotune on CUDA, fp16 autocast", "torch", device="cuda",
           channels_last=True, autocast="fp16", compile_mode="max-autotune"),
)}
DEFAULT_RUNNERS = ("torch", "torch-cl")
#: Other names users type for a runner (the engine's own name for the ONNX Runtime runner).
ALIASES = {"onnxruntime": "onnx", "ort": "onnx"}


def canonical_runners(names: Sequence[str]) -> list[str]:
    """Runner names as typed -> their canonical names; an unknown one is a usage error."""
    canonical = [ALIASES.get(name, name) for name in names]
    unknown = [typed for typed, name in zip(names, canonical) if name not in RUNNERS]
    if unknown:
        raise UsageError(f"unknown backend(s) {', '.join(unknown)}; choose from: {', '.join(RUNNERS)} "
                         f"(or {', '.join(ALIASES)} for onnx)")
    return canonical


def check_runners(names: Sequence[str]) -> dict[str, str]:
    """Known runners that cannot run here, each with the reason."""
    return {name: reason for name in canonical_runners(names) if (reason := RUNNERS[name].missing())}


def load_network(model: str) -> Any:
    """The module to time: its shipped weights where they are here (their padding, realistic
    values), else random ones (timing does not depend on the values)."""
    import torch

    from ...weights.loading import create_model
    from ...weights.registry import DEFAULTS, get_weights

    torch.manual_seed(0)
    if model in DEFAULTS and get_weights(DEFAULTS[model]).available():
        return create_model(model, DEFAULTS[model]).eval()
    return create_model(model).eval()


def _torch_engine(net: Any, device: str, channels_last: bool) -> Any:
    """``net`` behind the torch engine, placed as ``TorchEngine.load`` places a model.

    A local adapter until ``runtime.torch_engine`` has ``TorchEngine.from_module`` (asked
    for): bench times a module it loaded once for every runner.
    """
    import torch

    from ...runtime.torch_engine import TorchEngine

    entry = getattr(net, "pretrained_cfg", None)
    target = torch.device(device)
    net = net.eval().to(target)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return TorchEngine(
        name="torch", arch=net.plan.name,
        preprocessing=entry.preprocessing if entry else Preprocessing(size=net.plan.eval_resolution),
        labels=resolve_labels(entry.labels if entry else "imagenet1k", net.num_classes),
        model=net, device=target, channels_last=channels_last,
    )


def _cuda_graph(forward: Forward) -> Forward:
    """``forward`` captured once as a CUDA graph, replayed per call: one launch for the whole
    network removes the per-kernel launch overhead that dominates small batches."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            forward()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_output = forward()

    def replay() -> object:
        graph.replay()
        torch.cuda.synchronize()
        return static_output

    return replay


def _reference_forward(model: str, batch_size: int, size: int) -> Forward:
    """The port's own module, random weights (timing does not depend on their values), eager NCHW."""
    import torch

    package, name = REFERENCE_PORTS[model]
    torch.manual_seed(0)
    port = importlib.import_module(package).EfficientNet.from_name(name).eval()
    batch = torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))

    def forward() -> object:
        with torch.inference_mode():
            return port(batch)

    return forward
