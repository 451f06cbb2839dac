"""``quantize()``: an exported float ONNX file to an int8 one, every step of the recipe in order.

Read and check the float model -> calibration images (with the model's own preprocessing)
-> the prepared graph (pinned size) and its layers -> bias correction means and activation
ranges -> per-layer sensitivity -> how many layers stay float -> the int8 file with the
float file's metadata plus how it was quantized, written only once it loads and is measured.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from ..._files import staged
from ...data.transforms import Preprocessing
from ...errors import UsageError
from ...runtime.onnx_metadata import write_metadata
from ...runtime.onnxruntime_engine import open_session
from ..._files import check_writable
from .calibration import calibrate, calibration_inputs, load_evaluation
from .graph import Layer, find_layers, load_float_model, neighbour_layers, prepared_graph
from .recipe import METHODS, QUANTIZED_OPS, SEARCH_IMAGES, SENSITIVITY_IMAGES, WEIGHT_KINDS, QuantizeError, Settings
from .report import build_report, int8_op_counts, run_fields
from .scales import CorrectedGraphs, cpu_has_vnni, gemm_weights_for, weight_overrides
from .sensitivity import FloatChoice, choose_float_layers, sensitivity
from .sessions import run_batches, session


@dataclass
class QuantizeResult:
    path: Path
    report: dict[str, Any]
    layers: list[Layer] = field(default_factory=list)
    #: a file was at ``path`` before, and this run replaced it
    replaced: bool = False


def quantize(
    model: str | os.PathLike,
    calib: str | os.PathLike,
    output: str | os.PathLike,
    *,
    num_images: int = 1000,
    method: str = "percentile",
    per_channel: bool = True,
    keep_float: int | str = "auto",
    gemm_weights: str = "auto",
    bias_correction: bool = True,
    op_types: Sequence[str] = QUANTIZED_OPS,
    size: int | None = None,
    eval_dir: str | os.PathLike | None = None,
    eval_labels: str | os.PathLike | None = None,
    threads: int | None = None,
    speed: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> QuantizeResult:
    """Quantize ``model`` to ``output`` (written only when everything succeeded) and report.

    ``keep_float``: how many of the most sensitive layers stay float, or ``"auto"``: the count
    (0 to ``AUTO_MAX_FLOAT``, within ``AUTO_FLOAT_MACS`` of the multiply-adds and weights)
    whose int8 model is closest to float on the sensitivity images.
    ``gemm_weights``: a ``WEIGHT_KINDS`` entry for GEMM-backed layers; ``"auto"``:
    ``AUTO_GEMM_WEIGHTS`` (``s8-safe``), right on CPUs with and without VNNI.
    ``op_types``: ops that get int8 inputs/outputs (the SiLU/SE ops stay float by default).
    ``size``: the input size the int8 file is built for (default: the preprocessing's).
    ``eval_dir``/``eval_labels``: the images to compare fp32 and int8 on (default: the
    calibration images). ``threads``: onnxruntime threads inside one run, for the comparison
    and the timing. ``progress``: bars on a terminal. An ``output`` that cannot be written is
    refused before any work; an existing file is replaced (``QuantizeResult.replaced``).
    """
    say = log or (lambda message: None)
    check_options(method, num_images, gemm_weights, size)
    model, output = Path(model), Path(output)
    replaced = check_output(model, output)
    onnxruntime.set_default_logger_severity(3)  # the quantizer's sessions warn about every pruned initializer
    started = time.perf_counter()
    float_model, metadata, preprocessing = read_float_model(model, size)
    # a bad evaluation set fails now, not after the calibration
    evaluation = load_evaluation(eval_dir, eval_labels, metadata) if eval_dir is not None else None
    inputs, used, failures = calibration_inputs(calib, num_images, preprocessing, progress)
    say(f"calibration: {len(used)} images from {calib}" + (f", {len(failures)} unreadable skipped" if failures else ""))
    vnni = cpu_has_vnni()
    settings = Settings(method=method, per_channel=per_channel, gemm_weights=gemm_weights_for(gemm_weights),
                        bias_correction=bias_correction, op_types=tuple(op_types))
    with tempfile.TemporaryDirectory(prefix="effnet-quantize-") as temporary:
        work = Path(temporary)
        layers, choice = quantize_in(work, model, float_model, preprocessing.size, inputs, settings, keep_float,
                                     progress)
        int8 = write_metadata(onnx.load(str(choice.path)), {**metadata, "quantization": quantization_metadata(
            settings, len(used), choice, model, preprocessing.size)})
        with staged(output) as staged_path:  # renamed to output once it loads and is measured
            onnx.save(int8, staged_path)
            open_session(staged_path)
            report = build_report(model, staged_path, metadata, evaluation, inputs, threads, speed, progress, say,
                                  fp32_timed=work / "graph.onnx")
    report.update(run_fields(model, output, metadata.get("arch", "unknown"), calib, settings, vnni, len(used),
                             failures, keep_float, choice, layers))
    report["seconds"] = time.perf_counter() - started
    report["int8_ops"] = int8_op_counts(output)
    return QuantizeResult(output, report, layers, replaced)


def check_options(method: str, num_images: int, gemm_weights: str, size: int | None) -> None:
    """Refuse impossible settings before any file is read."""
    if method not in METHODS:
        raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {method}")
    if num_images < 1:
        raise UsageError("--num-images must be at least 1")
    if gemm_weights != "auto" and gemm_weights not in WEIGHT_KINDS:
        raise UsageError(f"--gemm-weights must be auto or one of {', '.join(WEIGHT_KINDS)}, not {gemm_weights}")
    if size is not None and size < 8:
        raise UsageError("--size must be at least 8")


def check_output(model: Path, output: Path) -> bool:
    """Refuse an ``output`` that cannot be written, or that is the float model itself (which
    the run reads to the end); returns whether a file there will be replaced."""
    if output.resolve() == model.resolve():
        raise UsageError(f"cannot write {output}: it is the float model itself; give the int8 file another name")
    return check_writable(output)


def read_float_model(path: Path, size: int | None) -> tuple[Any, dict[str, Any], Preprocessing]:
    """The float model, its metadata and its preprocessing (at ``size`` when given, and the
    metadata then says so)."""
    float_model, metadata = load_float_model(path)
    if "preprocessing" not in metadata:
        raise QuantizeError(f"{path}: no effnet preprocessing metadata; export the model with `effnet export`")
    batch = float_model.graph.input[0].type.tensor_type.shape.dim[0]
    if batch.HasField("dim_value"):  # calibration, the search and the report run batches of several images
        raise QuantizeError(f"{path} has a fixed batch of {batch.dim_value}: quantize an export with a dynamic "
                            "batch (`effnet export` without --batch); the int8 file then takes any batch")
    preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
    if size is not None:
        preprocessing = preprocessing.with_size(size)
        metadata = {**metadata, "preprocessing": preprocessing.to_dict()}
    return float_model, metadata, preprocessing


def quantize_in(work: Path, source: Path, float_model: Any, size: int, inputs: np.ndarray, settings: Settings,
                keep_float: int | str, progress: bool) -> tuple[list[Layer], FloatChoice]:
    """Every quantization step, with its files in ``work``: the layers (their sensitivity
    measured) and the chosen int8 file."""
    prepared_path, prepared = prepared_graph(float_model, size, work, source)
    layers = find_layers(prepared)
    corrected = CorrectedGraphs.measure(prepared, prepared_path, inputs, settings, work)
    all_nodes = {name for layer in layers for name in layer.nodes}
    cache = work / "ranges.json"
    calibrate(corrected(set()), inputs, settings, cache, progress=progress)
    overrides = weight_overrides(prepared, settings)  # bias correction leaves the weights alone
    probe_inputs = spread(inputs, SENSITIVITY_IMAGES)
    sensitivity(lambda layer: corrected(all_nodes - set(layer.nodes)), work, cache, settings, layers, probe_inputs,
                run_batches(session(prepared_path), probe_inputs), progress=progress, overrides=overrides)
    search_inputs = spread(inputs, SEARCH_IMAGES)
    choice = choose_float_layers(corrected, work, cache, settings, layers, keep_float, search_inputs,
                                 run_batches(session(prepared_path), search_inputs), overrides=overrides,
                                 neighbours=neighbour_layers(prepared, layers), progress=progress)
    return layers, choice


def spread(inputs: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of ``inputs``, spread evenly over them (a folder's neighbours are alike)."""
    return inputs[np.linspace(0, len(inputs) - 1, min(count, len(inputs))).round().astype(int)]


def quantization_metadata(settings: Settings, images: int, choice: FloatChoice, source: Path,
                          size: int) -> dict[str, Any]:
    """How the file was quantized (``effnet.quantization`` in its metadata)."""
    return {
        "format": "QDQ", "activations": "uint8",
        "weights": "int8 per-channel" if settings.per_channel else "int8 per-tensor",
        "method": settings.method, "calibration_images": images, "gemm_weights": settings.gemm_weights,
        "bias_correction": settings.bias_correction, "float_layers": [layer.name for layer in choice.float_layers],
        "source": source.name, "input_size": size,
    }
