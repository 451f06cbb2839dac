"""``effnet bench``: latency and throughput per model, batch size, thread count and backend.

Every configuration is warmed up, then timed batch by batch until its time budget is spent
(and at least ``min_repeats`` batches ran), so one command gives comparable p50/p90/p99 on
any machine. The header records what decides the numbers: CPU, cores, GPU, library
versions and the memory allocator (see ``effnet._malloc``: glibc defaults can double eager
latency at batch 16).

Backends are small adapters behind one signature, ``prepare(model, config, size) -> run_one_batch``,
so new runtimes (the ONNX Runtime backend, int8) plug in without touching the timing code;
one that cannot run here (no CUDA device, onnxruntime not installed) is skipped with a note.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TextIO

from .._malloc import allocator
from ..data.images import find_images
from ..errors import EffnetError, UsageError
from ..models.spec import NetworkPlan, resolve
from ..models.variants import VARIANTS, canonical_name, short_name
from .info import reported_entry

DESCRIPTION = (
    "Benchmark inference latency (p50/p90/p99) and throughput for models x batch sizes x threads\n"
    "x backends, with the machine in the header; print a table, write CSV/JSON and a PNG plot."
)

DEFAULT_BACKENDS = ("torch", "torch-cl")


@dataclass(frozen=True)
class BenchConfig:
    """One timed configuration (``threads=0``: the library's default)."""

    backend: str = "torch"
    batch_size: int = 1
    threads: int = 0
    size: int | None = None
    budget: float = 2.0
    warmup: int = 3
    min_repeats: int = 5
    #: onnx-int8: the folder of calibration images and how many of them to use.
    calib: str | None = None
    calib_images: int = 100


@dataclass
class BenchResult:
    model: str
    backend: str
    batch_size: int
    threads: int
    size: int
    p50: float
    p90: float
    p99: float
    mean: float
    throughput: float
    repeats: int
    first_call: float
    top1: float | None = None
    #: The first backend of the run at the same model, batch and threads, and its p50 over ours.
    baseline: str | None = None
    speedup: float | None = None

    def row(self) -> dict[str, Any]:
        """Flat, unit-suffixed record for CSV/JSON."""
        return {
            "model": self.model, "backend": self.backend, "batch_size": self.batch_size, "threads": self.threads,
            "size": self.size, "p50_ms": round(self.p50 * 1e3, 3), "p90_ms": round(self.p90 * 1e3, 3),
            "p99_ms": round(self.p99 * 1e3, 3), "mean_ms": round(self.mean * 1e3, 3),
            "throughput_img_s": round(self.throughput, 2), "repeats": self.repeats,
            "first_call_s": round(self.first_call, 3), "top1": self.top1, "baseline": self.baseline,
            "speedup": None if self.speedup is None else round(self.speedup, 3),
        }


Runner = Callable[[], object]


@dataclass(frozen=True)
class Backend:
    """How to run a model one way: ``missing()`` says why it cannot run here (None if it can)."""

    name: str
    summary: str
    prepare: Callable[[Any, BenchConfig, int], Runner]
    missing: Callable[[], str | None] = field(default=lambda: None)
    #: For backends that exist for some models only (``reference``): why not this one, or None.
    cannot_run: Callable[[str], str | None] = field(default=lambda model: None)


# -- torch on CPU -----------------------------------------------------------------------
def _torch_eager(channels_last: bool, compiled: bool = False) -> Callable[[Any, BenchConfig, int], Runner]:
    def prepare(model: Any, config: BenchConfig, size: int) -> Runner:
        import torch

        model = copy.deepcopy(model)  # converting formats or compiling must not leak into other configs
        batch = torch.randn(config.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
            batch = batch.contiguous(memory_format=torch.channels_last)
        if compiled:
            model = torch.compile(model, dynamic=False)

        def run() -> object:
            with torch.inference_mode():
                return model(batch)

        return run

    return prepare


# -- torch on CUDA ----------------------------------------------------------------------
def _cuda_missing() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return f"no CUDA device here (torch {torch.__version__})"
    return None


def _cuda(dtype: str | None, graph: bool = False, compiled: bool = False) -> Callable[[Any, BenchConfig, int], Runner]:
    """fp32 / fp16 / bf16 autocast, channels_last; optionally captured in a CUDA graph or compiled.

    A CUDA graph replays the whole forward as one launch: it removes the per-kernel launch
    overhead that dominates small batches, at the price of a fixed input buffer and shape.
    """

    def prepare(model: Any, config: BenchConfig, size: int) -> Runner:
        import torch

        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels once
        device = torch.device("cuda")
        model = copy.deepcopy(model).to(device, memory_format=torch.channels_last)
        batch = torch.randn(config.batch_size, 3, size, size, device=device).contiguous(
            memory_format=torch.channels_last)
        autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype or "")
        if compiled:
            model = torch.compile(model, mode="max-autotune")

        def forward() -> torch.Tensor:
            # autocast's weight cache must be off while capturing a CUDA graph (PyTorch's CUDA graphs notes)
            with torch.inference_mode(), torch.autocast("cuda", dtype=autocast_dtype, enabled=autocast_dtype is not None,
                                                        cache_enabled=not graph):
                return model(batch)

        if not graph:
            def run() -> object:
                out = forward()
                torch.cuda.synchronize()
                return out

            return run
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                forward()
        torch.cuda.current_stream().wait_stream(stream)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            static_output = forward()

        def replay() -> object:
            cuda_graph.replay()
            torch.cuda.synchronize()
            return static_output

        return replay

    return prepare


# -- ONNX Runtime (adapter to effnet's exporter and runtime/onnx_backend.py) -------------
def _onnx_missing() -> str | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install 'effnet[onnx]')"
    return None


def _export_for_bench(model: Any, size: int, folder: Path) -> Path:
    """The module as `effnet export` writes it (dynamic batch, this size, metadata) in ``folder``."""
    import onnx
    from onnx import helper

    from ..data.transforms import Preprocessing
    from ..runtime.onnx_backend import INPUT_FLOAT, encode_metadata
    from .export import DEFAULT_OPSET, _export_friendly, torch_to_onnx

    network = torch_to_onnx(_export_friendly(copy.deepcopy(model)), None, size, DEFAULT_OPSET, size)
    entry = getattr(model, "pretrained_cfg", None)
    preprocessing = entry.preprocessing.with_size(size) if entry else Preprocessing(size=size)
    helper.set_model_props(network, encode_metadata({
        "arch": model.plan.name, "input": INPUT_FLOAT, "num_classes": model.num_classes,
        "preprocessing": preprocessing.to_dict(),
    }))
    path = folder / "model.onnx"
    onnx.save_model(network, str(path))
    return path


def _onnx_session(path: Path, config: BenchConfig, size: int) -> Runner:
    import numpy as np

    from ..runtime.onnx_backend import open_session

    session = open_session(path, threads=config.threads or None, stop_spinning=True)  # bench keeps many sessions
    input_name = session.get_inputs()[0].name
    batch = np.random.default_rng(0).standard_normal((config.batch_size, 3, size, size), dtype=np.float32)
    return lambda: session.run(None, {input_name: batch})


def _onnx(model: Any, config: BenchConfig, size: int) -> Runner:
    """Export the module (dynamic batch, fixed size) to a temporary file and open an ORT session on it."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return _onnx_session(_export_for_bench(model, size, Path(folder)), config, size)


#: (module id, size, calibration folder, image count) -> int8 file: one quantization per model
#: and size serves every batch size and thread count of a run.
_INT8_FILES: dict[tuple[int, int, str, int], Path] = {}


def _onnx_int8(model: Any, config: BenchConfig, size: int) -> Runner:
    """Export as for ``onnx``, then quantize exactly as `effnet quantize` does by default
    (sensitivity analysis and all), calibrated on ``config.calib``."""
    import atexit
    import shutil
    import tempfile

    from .quantize import quantize

    if config.calib is None:
        raise UsageError("the onnx-int8 backend needs calibration images: --calib DIR")
    key = (id(model), size, config.calib, config.calib_images)
    if key not in _INT8_FILES:
        folder = Path(tempfile.mkdtemp(prefix="effnet-bench-int8-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        exported = _export_for_bench(model, size, folder)
        quantize(exported, config.calib, folder / "model.int8.onnx", num_images=config.calib_images, size=size,
                 speed=False)
        _INT8_FILES[key] = folder / "model.int8.onnx"
    return _onnx_session(_INT8_FILES[key], config, size)


# -- the reference PyTorch ports (what users compare against) ----------------------------
#: effnet variant -> (package, name) of the port most PyTorch users run: lukemelas'
#: efficientnet_pytorch for B0-B7 and its Lite sibling for Lite0-4.
REFERENCE_PORTS = {
    **{f"efficientnet_b{i}": ("efficientnet_pytorch", f"efficientnet-b{i}") for i in range(8)},
    **{f"efficientnet_lite{i}": ("efficientnet_lite_pytorch", f"efficientnet-lite{i}") for i in range(5)},
}


def _reference_missing() -> str | None:
    if importlib.util.find_spec("efficientnet_pytorch") is None:
        return "efficientnet_pytorch is not installed (pip install --no-deps efficientnet_pytorch==0.7.1)"
    return None


def _reference_cannot_run(model: str) -> str | None:
    package, _ = REFERENCE_PORTS.get(model, (None, None))
    if package is None:
        return f"no reference port of {model} (ports exist for b0-b7 and lite0-4)"
    if importlib.util.find_spec(package) is None:
        return f"{package} is not installed"
    return None


def _reference(model: Any, config: BenchConfig, size: int) -> Runner:
    """The port's own module, random weights (timing does not depend on their values), eager NCHW."""
    import importlib

    import torch

    package, name = REFERENCE_PORTS[model.plan.name]
    torch.manual_seed(0)
    port = importlib.import_module(package).EfficientNet.from_name(name).eval()
    batch = torch.randn(config.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))

    def run() -> object:
        with torch.inference_mode():
            return port(batch)

    return run


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend("reference", "the reference port users compare with: efficientnet_pytorch (B0-B7) or "
            "efficientnet_lite_pytorch (Lite0-4), eager NCHW", _reference, _reference_missing, _reference_cannot_run),
    Backend("torch", "PyTorch eager, NCHW (the default memory format)", _torch_eager(channels_last=False)),
    Backend("torch-cl", "PyTorch eager, channels_last (what effnet predict uses)", _torch_eager(channels_last=True)),
    Backend("torch-compile", "torch.compile (inductor), channels_last; compile time is in first_call_s",
            _torch_eager(channels_last=True, compiled=True)),
    Backend("onnx", "ONNX Runtime fp32, the graph effnet export writes", _onnx, _onnx_missing),
    Backend("onnx-int8", "ONNX Runtime int8, quantized as `effnet quantize` does (needs --calib DIR)", _onnx_int8,
            _onnx_missing),
    Backend("cuda", "CUDA fp32, channels_last", _cuda(None), _cuda_missing),
    Backend("cuda-fp16", "CUDA fp16 autocast, channels_last", _cuda("fp16"), _cuda_missing),
    Backend("cuda-bf16", "CUDA bf16 autocast, channels_last", _cuda("bf16"), _cuda_missing),
    Backend("cuda-graph", "CUDA fp16 autocast replayed as one CUDA graph (small batches)", _cuda("fp16", graph=True),
            _cuda_missing),
    Backend("cuda-compile", "torch.compile max-autotune on CUDA, fp16 autocast", _cuda("fp16", compiled=True),
            _cuda_missing),
)}


# -- timing -------------------------------------------------------------------------------
def time_runner(run: Runner, config: BenchConfig) -> tuple[list[float], float]:
    """First-call seconds (compile, graph capture, lazy init), then per-batch seconds after warm-up."""
    start = time.perf_counter()
    run()
    first_call = time.perf_counter() - start
    for _ in range(config.warmup):
        run()
    samples: list[float] = []
    deadline = time.perf_counter() + config.budget
    while len(samples) < config.min_repeats or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return samples, first_call


def summarize(model: str, config: BenchConfig, size: int, samples: Sequence[float], first_call: float,
              threads: int, top1: float | None = None) -> BenchResult:
    import numpy as np

    p50, p90, p99 = (float(v) for v in np.percentile(samples, [50, 90, 99]))
    mean = float(np.mean(samples))
    return BenchResult(model, config.backend, config.batch_size, threads, size, p50, p90, p99, mean,
                       config.batch_size / mean, len(samples), first_call, top1)


@contextlib.contextmanager
def _thread_scope(threads: int) -> Iterator[int]:
    """Run with ``threads`` intra-op threads (0: leave the default), restoring it afterwards."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def load_module(model: str, plan: NetworkPlan | None = None) -> Any:
    """The module to time: real weights where they ship (their padding, realistic values), else random."""
    import torch

    from ..models.network import EfficientNet
    from ..weights.loading import create_model
    from ..weights.registry import DEFAULTS, get_weights

    torch.manual_seed(0)
    if plan is not None:
        return EfficientNet(plan).eval()
    if model in DEFAULTS and get_weights(DEFAULTS[model]).available():
        return create_model(model, DEFAULTS[model]).eval()
    return create_model(model).eval()


@dataclass
class Trial:
    """One prepared configuration; ``add_round`` times it again and pools the samples.

    Several rounds interleaved across configurations spread load from other processes
    evenly over them, which keeps comparisons honest on a shared machine.
    """

    model: str
    config: BenchConfig
    size: int
    run: Runner
    top1: float | None = None
    samples: list[float] = field(default_factory=list)
    first_call: float = 0.0
    threads: int = 0

    def add_round(self) -> None:
        with _thread_scope(self.config.threads) as threads:
            samples, first_call = time_runner(self.run, self.config)
        if not self.samples:
            self.first_call, self.threads = first_call, threads
        self.samples += samples

    def result(self) -> BenchResult:
        return summarize(self.model, self.config, self.size, self.samples, self.first_call, self.threads, self.top1)


def prepare_trial(model: str, config: BenchConfig, module: Any, top1: float | None = None) -> Trial:
    size = config.size or module.plan.eval_resolution
    with _thread_scope(config.threads):
        run = BACKENDS[config.backend].prepare(module, config, size)
    return Trial(model, config, size, run, top1)


def with_speedups(results: Sequence[BenchResult], baseline: str | None) -> list[BenchResult]:
    """Each result with ``baseline``'s p50 over its own (same model, batch size and threads)."""
    if baseline is None:
        return list(results)
    reference = {(r.model, r.batch_size, r.threads): r.p50 for r in results if r.backend == baseline}
    return [replace(r, baseline=baseline, speedup=reference[key] / r.p50 if (key := (r.model, r.batch_size, r.threads))
                    in reference else None) for r in results]


def measure(model: str, config: BenchConfig, module: Any = None, top1: float | None = None) -> BenchResult:
    """Time one configuration of one model (``module`` given: time that instead of loading)."""
    trial = prepare_trial(model, config, module if module is not None else load_module(model), top1)
    trial.add_round()
    return trial.result()


def measure_plan(plan: NetworkPlan, config: BenchConfig) -> BenchResult:
    """Latency of a plan that has no name (``effnet scale --target-latency``)."""
    check_backends([config.backend])
    return measure(plan.name, config, module=load_module(plan.name, plan))


def check_backends(names: Sequence[str]) -> dict[str, str]:
    """Unknown names are a usage error; known ones that cannot run here map to the reason."""
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise UsageError(f"unknown backend(s) {', '.join(unknown)}; choose from: {', '.join(BACKENDS)}")
    return {n: reason for n in names if (reason := BACKENDS[n].missing())}


# -- the machine --------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": _cpu_model(),
        "cores": usable,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "onnxruntime": _version("onnxruntime"),
        "numpy": _version("numpy"),
        "python": platform.python_version(),
        "allocator": allocator(),
        "torch_threads_default": torch.get_num_threads(),
    }


def header_lines(machine: dict[str, Any]) -> list[str]:
    gpu = machine["gpu"] or "none"
    return [
        f"machine: {machine['cpu']}, {machine['cores']} cores, GPU: {gpu}; {machine['date']}",
        f"libraries: torch {machine['torch']}, onnxruntime {machine['onnxruntime']}, numpy {machine['numpy']}, "
        f"python {machine['python']}",
        f"allocator: {machine['allocator']}",
    ]


# -- outputs ------------------------------------------------------------------------------
def write_csv(path: str, results: Sequence[BenchResult]) -> None:
    rows = [r.row() for r in results]
    fields = list(rows[0]) if rows else list(BenchResult.__dataclass_fields__)
    with _open_output(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def write_json(path: str, machine: dict[str, Any], results: Sequence[BenchResult], skipped: dict[str, str],
               config: dict[str, Any]) -> None:
    document = {"machine": machine, "config": config, "results": [r.row() for r in results], "skipped": skipped}
    with _open_output(path) as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")


def _open_output(path: str) -> contextlib.AbstractContextManager[TextIO]:
    if path == "-":
        return contextlib.nullcontext(sys.stdout)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w", newline="")


def plot(path: str, results: Sequence[BenchResult], machine: dict[str, Any]) -> None:
    """Two panels: reported top-1 vs latency (the paper's Figure 1 shape), throughput vs batch size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, (accuracy_axis, throughput_axis) = plt.subplots(1, 2, figsize=(13, 5.2))
    series = sorted({(r.backend, r.threads) for r in results})
    smallest_batch = min((r.batch_size for r in results), default=1)
    unranked = sorted({r.model for r in results if r.top1 is None})
    order = {name: index for index, name in enumerate(VARIANTS)}
    families = sorted({VARIANTS[r.model].family.name for r in results})
    for series_index, (backend, threads) in enumerate(series):
        for family_index, family in enumerate(families):
            # one line per family in variant order (B0, B1, ...), like the paper's Figure 1
            points = sorted(
                (order[r.model], r.p50 * 1e3, r.top1, r.model) for r in results
                if (r.backend, r.threads) == (backend, threads) and r.batch_size == smallest_batch
                and r.top1 is not None and VARIANTS[r.model].family.name == family
            )
            if not points:
                continue
            _, xs, ys, names = zip(*points)
            accuracy_axis.plot(xs, ys, color=f"C{series_index % 10}", marker="osD^v"[family_index % 5],
                               label=f"{_series(backend, threads)} ({family})")
            for x, y, name in zip(xs, ys, names):
                accuracy_axis.annotate(short_name(name), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    accuracy_axis.set_xscale("log")
    # label 1-2-5 steps only: every minor tick labelled overlaps once the range spans decades
    accuracy_axis.xaxis.set_minor_locator(matplotlib.ticker.LogLocator(subs=(2.0, 5.0)))
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    accuracy_axis.xaxis.set_major_formatter(plain)
    accuracy_axis.xaxis.set_minor_formatter(plain)
    accuracy_axis.set_xlabel(f"latency p50 at batch {smallest_batch} (ms, log scale)")
    accuracy_axis.set_ylabel("ImageNet top-1 (%) reported for the weights")
    accuracy_axis.set_title("accuracy vs latency")
    accuracy_axis.grid(alpha=0.3)
    if accuracy_axis.lines:
        accuracy_axis.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.18))  # off the data
    if unranked:
        accuracy_axis.text(0.02, 0.98 if accuracy_axis.lines else 0.5,
                           "no reported top-1: " + ", ".join(map(short_name, unranked)),
                           transform=accuracy_axis.transAxes, fontsize=8, va="top", color="0.35")

    models = sorted({r.model for r in results})
    markers = "osD^vP*X"
    dashes = ("-", "--", ":", "-.")
    for model_index, model in enumerate(models):
        for series_index, (backend, threads) in enumerate(series):
            points = sorted((r.batch_size, r.throughput) for r in results
                            if (r.model, r.backend, r.threads) == (model, backend, threads))
            if points:
                xs, ys = zip(*points)
                throughput_axis.plot(xs, ys, color=f"C{model_index % 10}", marker=markers[series_index % len(markers)],
                                     linestyle=dashes[series_index // len(markers) % len(dashes)],
                                     label=f"{short_name(model)} {_series(backend, threads, short=True)}")
    batch_sizes = sorted({r.batch_size for r in results})
    throughput_axis.set_xscale("log", base=2)
    throughput_axis.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    throughput_axis.minorticks_off()
    throughput_axis.set_xlabel("batch size")
    throughput_axis.set_ylabel("throughput (images/s)")
    throughput_axis.set_title("throughput vs batch size")
    throughput_axis.grid(alpha=0.3, which="both")
    throughput_axis.legend(fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    sizes = sorted({r.size for r in results})
    figure.suptitle(
        f"{machine['cpu']}, {machine['cores']} cores, GPU: {machine['gpu'] or 'none'} | torch {machine['torch']}"
        f" | input {'/'.join(map(str, sizes))} px | {machine['allocator']}", fontsize=9)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def _series(backend: str, threads: int, short: bool = False) -> str:
    """A backend and its CPU threads (which say nothing about a CUDA backend's speed)."""
    if backend.startswith("cuda"):
        return backend
    return f"{backend} {threads}t" if short else f"{backend}, {threads} thread{'s' * (threads != 1)}"


def print_table(results: Sequence[BenchResult], skipped: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table()
    baseline = next((r.baseline for r in results if r.baseline), None)
    titles = ["model", "backend", "batch", "threads", "size", "p50 ms", "p90 ms", "p99 ms", "img/s"]
    titles += [f"vs {baseline}"] if baseline else []
    for title in [*titles, "repeats", "first call s"]:
        table.add_column(title, justify="left" if title in ("model", "backend") else "right")
    for r in results:
        ratio = [f"{r.speedup:.2f}x" if r.speedup is not None else "-"] if baseline else []
        table.add_row(short_name(r.model), r.backend, str(r.batch_size), str(r.threads), str(r.size),
                      f"{r.p50 * 1e3:.2f}", f"{r.p90 * 1e3:.2f}", f"{r.p99 * 1e3:.2f}", f"{r.throughput:.1f}",
                      *ratio, str(r.repeats), f"{r.first_call:.2f}")
    console = Console(width=max(120, Console().width))
    console.print(table)
    for name, reason in skipped.items():
        console.print(f"skipped {name}: {reason}")


# -- command line ---------------------------------------------------------------------------
def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{what} must be comma-separated integers, not '{text}'") from None
    if not values or min(values) < 0 or (what != "--threads" and min(values) < 1):
        raise UsageError(f"{what} must list positive integers, not '{text}'")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    width = max(map(len, BACKENDS))
    parser.epilog = "backends:\n" + "\n".join(f"  {b.name:<{width}}  {b.summary}" for b in BACKENDS.values())
    parser.add_argument("--models", default="lite0,b0", help="comma-separated variants (default: lite0,b0)")
    parser.add_argument("--batch-sizes", default="1,16", help="comma-separated batch sizes (default: 1,16)")
    parser.add_argument("--threads", default="0",
                        help="comma-separated intra-op thread counts; 0 = library default (default: 0)")
    parser.add_argument("--backends", default=",".join(DEFAULT_BACKENDS),
                        help=f"comma-separated, from: {', '.join(BACKENDS)} (default: {','.join(DEFAULT_BACKENDS)})")
    parser.add_argument("--size", type=int, help="input size for every model (default: each model's eval size)")
    parser.add_argument("--budget", type=float, default=2.0,
                        help="seconds of timing per configuration and round (default 2)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time every configuration this many times, interleaved, and pool the samples: "
                             "spreads load from other processes evenly on a shared machine (default 1)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed batches before timing, each round (default 3)")
    parser.add_argument("--min-repeats", type=int, default=5, help="timed batches at least (default 5)")
    parser.add_argument("--calib", metavar="DIR",
                        help="onnx-int8: folder of calibration images (e.g. a few hundred of your own photos)")
    parser.add_argument("--calib-images", type=int, default=100,
                        help="onnx-int8: calibration images to use from --calib (default 100)")
    parser.add_argument("--csv", metavar="PATH", help="write results as CSV ('-' for stdout)")
    parser.add_argument("--json", metavar="PATH", help="write machine, config and results as JSON ('-' for stdout)")
    parser.add_argument("--plot", metavar="PNG", help="write accuracy-vs-latency and throughput-vs-batch plots")


def run(args: argparse.Namespace) -> int:
    models = [canonical_name(m) for m in args.models.split(",") if m.strip()]
    batch_sizes = _int_list(args.batch_sizes, "--batch-sizes")
    threads = _int_list(args.threads, "--threads")
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not models or not backends:
        raise UsageError("--models and --backends must name at least one each")
    for option, value, least in (("--budget", args.budget, None), ("--warmup", args.warmup, 0),
                                 ("--min-repeats", args.min_repeats, 1), ("--rounds", args.rounds, 1)):
        if (value <= 0) if least is None else (value < least):
            raise UsageError(f"{option} must be {'> 0' if least is None else f'at least {least}'}, not {value:g}")
    if args.size is not None and not 32 <= args.size <= 2048:
        raise UsageError(f"--size must be between 32 and 2048, not {args.size}")
    skipped = check_backends(backends)
    if "onnx-int8" in backends and "onnx-int8" not in skipped:
        if not args.calib:
            raise UsageError("the onnx-int8 backend needs calibration images: --calib DIR")
        if not Path(args.calib).is_dir() or not find_images(args.calib):
            raise UsageError(f"--calib {args.calib}: no images there (.jpg, .png, ...); "
                             "onnx-int8 calibrates on them")
    runnable = [b for b in backends if b not in skipped]
    base = BenchConfig(size=args.size, budget=args.budget, warmup=args.warmup, min_repeats=args.min_repeats,
                       calib=args.calib, calib_images=args.calib_images)
    configs = [replace(base, backend=b, batch_size=n, threads=t) for b in runnable for t in threads for n in batch_sizes]
    pairs = []
    for model, config in ((m, c) for m in models for c in configs):
        reason = BACKENDS[config.backend].cannot_run(model)
        if reason:
            skipped[f"{config.backend} for {short_name(model)}"] = reason
        else:
            pairs.append((model, config))
    if not pairs:  # before the header: nothing half-printed for a run that cannot start
        raise EffnetError("nothing to measure: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()))
    machine = machine_info()
    to_stdout = "-" in (args.csv, args.json)
    if not to_stdout:
        print("\n".join(header_lines(machine)))

    from rich.console import Console
    from rich.progress import Progress

    trials: list[Trial] = []
    interactive = sys.stderr.isatty()
    modules: dict[str, Any] = {}
    with Progress(transient=True, console=Console(stderr=True), disable=not interactive) as bar:
        task = bar.add_task("benchmarking", total=len(pairs) * args.rounds)
        for round_index in range(args.rounds):
            for index, (model, config) in enumerate(pairs):
                step = (f"round {round_index + 1}/{args.rounds}: {short_name(model)} {config.backend} "
                        f"bs{config.batch_size} {config.threads or 'default'} threads")
                bar.update(task, description=step)
                if not interactive:  # logs and CI: one line per configuration instead of a bar
                    print(f"[{round_index * len(pairs) + index + 1}/{len(pairs) * args.rounds}] {step}",
                          file=sys.stderr, flush=True)
                if round_index == 0:
                    if model not in modules:
                        modules[model] = load_module(model)
                    entry = reported_entry(model)
                    trials.append(prepare_trial(model, config, modules[model], entry.top1 if entry else None))
                trials[index].add_round()
                bar.advance(task)
    results = with_speedups([trial.result() for trial in trials], runnable[0] if len(runnable) > 1 else None)

    if not to_stdout:
        print_table(results, skipped)
    else:
        for name, reason in skipped.items():
            print(f"skipped {name}: {reason}", file=sys.stderr)
    if args.csv:
        write_csv(args.csv, results)
    if args.json:
        write_json(args.json, machine, results, skipped, {k: v for k, v in vars(args).items() if k != "func"})
    if args.plot:
        plot(args.plot, results, machine)
        if not to_stdout:
            print(f"plot written to {args.plot}")
    return 0

