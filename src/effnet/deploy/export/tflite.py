"""A network to LiteRT/TFLite (fp32, or full-integer int8), checked in the LiteRT interpreter.

fp32: ``litert_torch.convert`` of the network behind an NHWC wrapper (TFLite's layout), so the
file takes what effnet's preprocessing makes, transposed: float32 N x S x S x 3.

int8 (``int8=True`` with a calibration folder): full-integer, as Google's published
EfficientNet-Lite int8 files are. The float model is quantized by ``ai_edge_quantizer``
(Google's quantizer for converted LiteRT models: int8 activations, per-channel int8
weights), calibrated in the LiteRT interpreter on the calibration images prepared exactly as
the weights' preprocessing says. Two inputs:

- ``uint8`` (default): the file takes uint8 RGB pixels already resized and cropped; the
  normalization is a 1x1 depthwise convolution inside (it is per channel, so ImageNet mean/std
  fit as well as Lite's 127/128), and the input's quantization is exactly the pixel value
  (scale 1), so no calibration range clips a bright pixel.
- ``float``: the file takes the same normalized float32 NHWC input as the fp32 file, and
  quantizes it in its first op.

The activation ranges are the true min/max over every calibration image (the quantizer's
default moving average clips the largest logits and lost 13 points of top-1 agreement on
Lite0). The output is dequantized in the file: every effnet TFLite file returns float32
logits, so engines and users never apply output scales themselves.

Every file is run in the LiteRT interpreter before it is written: fp32 must match torch
(logits within tolerance, same top-1) on deterministic photo-like images; int8 reports its
top-1 agreement with torch on the calibration images. Preprocessing and labels travel in the
file (``runtime.tflite_metadata``). The file is written whole or not at all (``_files.staged``).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import check_writable, staged
from ...data.transforms import Preprocessing
from ...errors import UsageError
from ...runtime.tflite_metadata import INPUT_FLOAT_NHWC, INPUT_UINT8_NHWC, write_metadata
from .onnx import ExportError, _refuse_failed, _test_image, network_metadata

#: Packages the export needs (the ``tflite`` extra) and how to install them.
PACKAGES = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
INSTALL = "pip install 'effnet[tflite]'"
#: ``int8_input`` choices: the input tensor of an int8 file.
INT8_INPUTS = ("uint8", "float")
#: Max abs logits difference accepted between the fp32 file and torch (measured on Lite0 and
#: B0: under 2e-5), unless torch's own float32 error is larger (see ``onnx.FLOAT32_SLACK``).
TOLERANCE = 1e-3
#: Images used for int8 calibration unless told otherwise.
DEFAULT_CALIBRATION_IMAGES = 100


@dataclass
class TfliteExportResult:
    """The written file, what it holds, the checks it passed and, for int8, its agreement."""

    path: Path
    arch: str
    precision: str
    input_layout: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: int8: top-1 agreement with torch on the calibration images (fraction), and how many
    agreement: float | None = None
    compared: int = 0
    calibration_images: int = 0
    seconds: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    replaced: bool = False


def missing_packages() -> list[str]:
    return [package for package in PACKAGES if importlib.util.find_spec(package) is None]


def check_settings(int8: bool, calibration: str | os.PathLike | None, int8_input: str) -> None:
    """Refuse settings that exclude each other, or a missing extra, before any slow work."""
    absent = missing_packages()
    if absent:
        raise UsageError(f"--format tflite needs {', '.join(absent)} (install it: {INSTALL})")
    if int8 and calibration is None:
        raise UsageError("--int8 needs calibration images: --calib DIR")
    if not int8 and calibration is not None:
        raise UsageError("--calib applies with --int8 only")
    if int8_input not in INT8_INPUTS:
        raise UsageError(f"--int8-input must be one of {', '.join(INT8_INPUTS)}, not {int8_input}")


# -- wrappers: what the file computes ----------------------------------------------------
def nhwc_network(net: Any) -> Any:
    """``net`` taking normalized float32 NHWC (TFLite's layout)."""
    from torch import nn

    class Nhwc(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = net

        def forward(self, x: Any) -> Any:
            return self.network(x.permute(0, 3, 1, 2))

    return Nhwc().eval()


def pixel_network(net: Any, preprocessing: Preprocessing) -> Any:
    """``net`` taking resized, cropped pixels (0-255) NHWC; the normalization is a 1x1
    depthwise convolution, which every int8 kernel set quantizes (a Sub/Mul pair would not
    always be)."""
    import torch
    from torch import nn

    normalize = nn.Conv2d(3, 3, 1, groups=3)
    std = torch.tensor(preprocessing.std, dtype=torch.float32)
    mean = torch.tensor(preprocessing.mean, dtype=torch.float32)
    with torch.no_grad():
        normalize.weight.copy_((1.0 / (255.0 * std)).view(3, 1, 1, 1))
        normalize.bias.copy_(-mean / std)

    class Pixels(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.normalize = normalize
            self.network = net

        def forward(self, x: Any) -> Any:
            return self.network(self.normalize(x.permute(0, 3, 1, 2)))

    return Pixels().eval()


def convert(module: Any, size: int) -> bytes:
    """``module`` (NHWC input, batch 1) as TFLite flatbuffer bytes (litert_torch)."""
    import torch

    example = (torch.zeros(1, size, size, 3),)
    with _quiet():
        try:
            import litert_torch

            return bytes(litert_torch.convert(module, example).model_content())
        except Exception as exc:
            raise ExportError(f"litert_torch.convert failed: {str(exc).strip().splitlines()[0][:300]}") from exc


@contextlib.contextmanager
def _quiet():
    """The converter and quantizer print progress bars and reports, and log warnings
    about ops and enums that do not concern a classifier."""
    captured = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("", "absl", "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


# -- int8 ---------------------------------------------------------------------------------
def _min_max(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Calibration ranges that hold every image seen (the quantizer's default averages)."""
    if not old:
        return new
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


def quantize_int8(float_model: bytes, inputs: np.ndarray, input_range: tuple[float, float] | None) -> bytes:
    """Full-integer int8 (per-channel weights) of ``float_model``, calibrated on ``inputs``
    (N x S x S x 3 float32, what the float model takes); ``input_range`` pins the input's
    range (the pixel range for uint8 files) instead of calibrating it."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, quantizer, recipe

    signatures = Interpreter(model_content=float_model).get_signature_list()
    signature = next(iter(signatures))
    input_name = signatures[signature]["inputs"][0]
    with _quiet():
        quantizing = quantizer.Quantizer(float_model)
        quantizing.load_quantization_recipe(recipe.static_wi8_ai8())
        calibrating = calibrator.Calibrator(float_model, num_threads=os.cpu_count() or 1, qsv_update_func=_min_max)
        # the public Quantizer.calibrate fixes the moving average; its recipe is what it would pass
        calibrating.calibrate({signature: [{input_name: row[None]} for row in inputs]}, quantizing._recipe_manager)
        ranges = calibrating.get_model_qsvs()
        if input_range is not None:
            name = _input_tensor_name(float_model)
            ranges[name] = {"min": np.array(input_range[0], np.float32), "max": np.array(input_range[1], np.float32)}
        quantized = quantizing.quantize(ranges, enable_progress_report=False).quantized_model
    return bytes(quantized)


def _input_tensor_name(model: bytes) -> str:
    from ai_edge_litert.tools import flatbuffer_utils

    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    graph = parsed.subgraphs[0]
    name = graph.tensors[graph.inputs[0]].name
    return name.decode() if isinstance(name, bytes) else name


def set_interface(model: bytes, input_type: str) -> bytes:
    """An int8 model's interface made usable as it is: the input becomes ``uint8`` (scale 1,
    zero point 0: the pixel itself) or ``float`` (a QUANTIZE op in front requantizes it), and
    the output float32 logits (a DEQUANTIZE op behind). The int8 graph inside is unchanged."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    parsed = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
    graph = parsed.subgraphs[0]
    quantize_op = _opcode(parsed, schema, schema.BuiltinOperator.QUANTIZE)
    dequantize_op = _opcode(parsed, schema, schema.BuiltinOperator.DEQUANTIZE)
    empty = _empty_buffer(parsed, schema)

    old_input, old_output = graph.inputs[0], graph.outputs[0]
    source = graph.tensors[old_input]
    if input_type == "uint8":
        new_input = _tensor(schema, graph, source, "image_uint8", schema.TensorType.UINT8, empty, (1.0, 0))
    else:
        new_input = _tensor(schema, graph, source, "input_float32", schema.TensorType.FLOAT32, empty, None)
    new_output = _tensor(schema, graph, graph.tensors[old_output], "logits", schema.TensorType.FLOAT32, empty, None)
    graph.operators.insert(0, _operator(schema, quantize_op, new_input, old_input))
    graph.operators.append(_operator(schema, dequantize_op, old_output, new_output))
    graph.inputs, graph.outputs = [new_input], [new_output]
    for signature in parsed.signatureDefs or []:
        for item in signature.inputs:
            if item.tensorIndex == old_input:
                item.tensorIndex = new_input
        for item in signature.outputs:
            if item.tensorIndex == old_output:
                item.tensorIndex = new_output
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))


def _opcode(parsed: Any, schema: Any, builtin: int) -> int:
    for index, code in enumerate(parsed.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode, code.version = builtin, min(builtin, 127), 2
    parsed.operatorCodes.append(code)
    return len(parsed.operatorCodes) - 1


def _empty_buffer(parsed: Any, schema: Any) -> int:
    parsed.buffers.append(schema.BufferT())
    return len(parsed.buffers) - 1


def _tensor(schema: Any, graph: Any, like: Any, name: str, tensor_type: int, buffer: int,
            quantization: tuple[float, int] | None) -> int:
    tensor = schema.TensorT()
    tensor.shape = list(like.shape)
    tensor.shapeSignature = list(like.shapeSignature) if like.shapeSignature is not None else None
    tensor.type, tensor.buffer, tensor.name = tensor_type, buffer, name
    if quantization is not None:
        params = schema.QuantizationParametersT()
        params.scale, params.zeroPoint = [quantization[0]], [quantization[1]]
        tensor.quantization = params
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _operator(schema: Any, opcode: int, source: int, target: int) -> Any:
    operator = schema.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = opcode, [source], [target]
    return operator


# -- checks -------------------------------------------------------------------------------
def run_file(model: bytes | str | os.PathLike, inputs: np.ndarray, threads: int | None = 1) -> np.ndarray:
    """Logits of the TFLite ``model`` for each row of ``inputs`` (NHWC, the file's dtype)."""
    from ai_edge_litert.interpreter import Interpreter

    if isinstance(model, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model), num_threads=threads)
    else:
        interpreter = Interpreter(model_path=str(model), num_threads=threads)
    interpreter.allocate_tensors()
    source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    rows = []
    for row in inputs:
        interpreter.set_tensor(source["index"], np.ascontiguousarray(row[None], dtype=source["dtype"]))
        interpreter.invoke()
        rows.append(interpreter.get_tensor(target["index"])[0].copy())
    return np.stack(rows)


def _torch_logits(module: Any, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The wrapper's logits in float32 and float64 (torch's own rounding error)."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
    with torch.inference_mode():
        expected = module(tensor).float().numpy()
        exact = copy.deepcopy(module).double()(tensor.double()).numpy()
    return expected, exact


def check_fp32(model: bytes, module: Any, preprocessing: Preprocessing) -> list[dict[str, Any]]:
    """The fp32 file vs torch on deterministic photo-like images: logits and top-1."""
    images = [_test_image(h, w, seed) for seed, (h, w) in enumerate([(301, 457), (480, 353), (256, 256)])]
    inputs = np.stack([preprocessing(image).transpose(1, 2, 0) for image in images])
    actual = run_file(model, inputs)
    expected, exact = _torch_logits(module, inputs)
    own_error = float(np.abs(expected - exact).max())
    return [{"what": "fp32 vs torch", "shape": list(inputs.shape), "max_abs_diff": float(np.abs(actual - expected).max()),
             "tolerance": max(TOLERANCE, 4.0 * own_error),
             "same_top1": bool((actual.argmax(1) == expected.argmax(1)).all())}]


# -- export -------------------------------------------------------------------------------
def export_tflite(
    model: str | None = None,
    weights: Any = "default",
    output: str | os.PathLike = "model.tflite",
    *,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    num_images: int = DEFAULT_CALIBRATION_IMAGES,
    int8_input: str = "uint8",
    log: Callable[[str], None] | None = None,
) -> TfliteExportResult:
    """Load ``model`` with ``weights`` (as every command does), then ``export_tflite_network``."""
    check_settings(int8, calibration, int8_input)
    check_writable(output)
    from ...runtime.torch_engine import TorchEngine  # torch: only once an export really runs

    started = time.perf_counter()
    engine = TorchEngine.load(model, weights, channels_last=False)
    result = export_tflite_network(engine.model, output, int8=int8, calibration=calibration, num_images=num_images,
                                   int8_input=int8_input, log=log)
    result.seconds = time.perf_counter() - started
    return result


def export_tflite_network(
    net: Any,
    output: str | os.PathLike,
    *,
    int8: bool = False,
    calibration: str | os.PathLike | None = None,
    num_images: int = DEFAULT_CALIBRATION_IMAGES,
    int8_input: str = "uint8",
    log: Callable[[str], None] | None = None,
) -> TfliteExportResult:
    """Convert a built ``EfficientNet`` at its weights' input size (batch 1), check it in the
    LiteRT interpreter and write ``output``. ``net`` is left as it was (a CPU copy is
    converted). Raises ``ExportError`` (nothing written) when the fp32 check fails."""
    check_settings(int8, calibration, int8_input)
    replaced = check_writable(output)
    say = log or (lambda message: None)
    started = time.perf_counter()
    net = copy.deepcopy(net).cpu().eval()
    entry = getattr(net, "pretrained_cfg", None)
    preprocessing = entry.preprocessing if entry else Preprocessing(size=net.plan.eval_resolution)
    size = preprocessing.size
    crops, paths = _calibration_crops(calibration, num_images, preprocessing) if int8 else (None, [])
    float_module = nhwc_network(net)
    say(f"converting {net.plan.name} to TFLite fp32 ({size}x{size}, batch 1) ...")
    float_model = convert(float_module, size)
    say("checking: LiteRT interpreter vs torch ...")
    checks = check_fp32(float_model, float_module, preprocessing)
    _refuse_failed(checks)
    layout, precision, data = INPUT_FLOAT_NHWC, "fp32", float_model
    agreement, compared, used = None, 0, 0
    extra: dict[str, Any] = {}
    if int8:
        used = len(paths)
        say(f"quantizing to int8 ({int8_input} input) on {used} calibration images ...")
        if int8_input == "uint8":
            module, inputs, layout = pixel_network(net, preprocessing), crops.astype(np.float32), INPUT_UINT8_NHWC
            source = convert(module, size)
            data = set_interface(quantize_int8(source, inputs, (0.0, 255.0)), "uint8")
            feed = crops
        else:
            module = float_module
            inputs = np.stack([preprocessing.normalize(crop).transpose(1, 2, 0) for crop in crops])
            data = set_interface(quantize_int8(float_model, inputs, None), "float")
            feed = inputs
        say("checking: int8 top-1 agreement with torch on the calibration images ...")
        expected, _ = _torch_logits(module, inputs)
        actual = run_file(data, feed)
        agreement, compared, precision = float((actual.argmax(1) == expected.argmax(1)).mean()), len(feed), "int8"
        extra = {"quantization": {"precision": "int8", "weights": "int8 per-channel", "activations": "int8 min/max",
                                  "calibration_images": used, "top1_agreement_calibration": agreement,
                                  "tool": "ai-edge-quantizer"}}
    metadata = {**network_metadata(net, preprocessing, layout), "precision": precision, **extra}
    output = Path(output)
    with staged(output) as temporary:
        temporary.write_bytes(write_metadata(data, metadata))
        run_file(temporary, np.zeros((1, size, size, 3), np.uint8 if layout == INPUT_UINT8_NHWC else np.float32))
    return TfliteExportResult(output, net.plan.name, precision, layout, checks, agreement, compared, used,
                              time.perf_counter() - started, metadata, replaced)


def _calibration_crops(folder: str | os.PathLike | None, num_images: int,
                       preprocessing: Preprocessing) -> tuple[np.ndarray, Sequence[Path]]:
    """Up to ``num_images`` images of ``folder``, resized and cropped as the weights say (uint8)."""
    from ..quantize.calibration import load_crops, select_images  # QuantizeError: one line, nothing written

    crops, used, _ = load_crops(select_images(folder, num_images), preprocessing)
    return crops, used
