"""A network to LiteRT/TFLite (fp32 or int8), checked in the LiteRT interpreter.

fp32: ``litert_torch.convert`` of the network behind an NHWC wrapper (TFLite's layout), so the
file takes what effnet's preprocessing makes, transposed: float32 N x S x S x 3.

int8 (``int8=True`` with a calibration folder): int8 activations and per-channel int8 weights,
as Google's published EfficientNet-Lite int8 files are, by ``ai_edge_quantizer`` (Google's
quantizer for converted LiteRT models) with ``tflite_int8``'s recipe (percentile ranges, bias
correction, the first two convolutions float unless ``float_layers=0`` asks for a
full-integer file), calibrated in the LiteRT interpreter on the calibration images prepared
exactly as the weights' preprocessing says. Two inputs:

- ``uint8`` (default): the file takes uint8 RGB pixels already resized and cropped; the
  normalization is a 1x1 depthwise convolution inside (it is per channel, so ImageNet mean/std
  fit as well as Lite's 127/128), and the input's quantization is exactly the pixel value
  (scale 1), so no calibration range clips a bright pixel.
- ``float``: the file takes the same normalized float32 NHWC input as the fp32 file, and
  quantizes it in its first op.

The output is dequantized in the file: every effnet TFLite file returns float32 logits, so
engines and users never apply output scales themselves.

Every file is run in the LiteRT interpreter before it is written: fp32 must match torch
(logits within tolerance, same top-1) on deterministic photo-like images; int8 reports its
top-1 agreement with torch on the calibration images. Preprocessing and labels travel in the
file (``runtime.tflite_metadata``). The file is written whole or not at all (``_files.staged``).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..._files import check_writable, staged
from ..._quiet import quiet
from ...data.transforms import Preprocessing
from ...errors import UsageError
from ...runtime.tflite_metadata import INPUT_FLOAT_NHWC, INPUT_UINT8_NHWC, write_metadata
from .onnx import (FLOAT32_SLACK, ExportError, _refuse_failed, _test_image, float32_error, network_metadata,
                   torch_logits, weights_preprocessing)
from .tflite_int8 import DEFAULT_FLOAT_LAYERS, PERCENTILE, quantize_int8, set_interface

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


def check_settings(int8: bool, calibration: str | os.PathLike | None, int8_input: str,
                   float_layers: int = DEFAULT_FLOAT_LAYERS) -> None:
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
    if float_layers < 0:
        raise UsageError(f"--int8-float-layers must be 0 or more, not {float_layers}")


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
    with quiet():
        try:
            import litert_torch

            return bytes(litert_torch.convert(module, example).model_content())
        except Exception as exc:
            raise ExportError(f"litert_torch.convert failed: {str(exc).strip().splitlines()[0][:300]}") from exc


# -- checks -------------------------------------------------------------------------------
def run_file(model: bytes | str | os.PathLike, inputs: np.ndarray, threads: int | None = 1) -> np.ndarray:
    """Logits of the TFLite ``model`` for each row of ``inputs`` (NHWC, the file's dtype)."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet():  # LiteRT's C++ announces its XNNPACK delegate on stderr
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


def check_fp32(model: bytes, module: Any, preprocessing: Preprocessing) -> list[dict[str, Any]]:
    """The fp32 file vs torch on deterministic photo-like images: logits and top-1."""
    images = [_test_image(h, w, seed) for seed, (h, w) in enumerate([(301, 457), (480, 353), (256, 256)])]
    inputs = np.stack([preprocessing(image).transpose(1, 2, 0) for image in images])
    actual = run_file(model, inputs)
    expected = torch_logits(module, inputs)
    own_error = float32_error(module, inputs, expected)
    return [{"what": "fp32 vs torch", "shape": list(inputs.shape), "max_abs_diff": float(np.abs(actual - expected).max()),
             "tolerance": max(TOLERANCE, FLOAT32_SLACK * own_error),
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
    float_layers: int = DEFAULT_FLOAT_LAYERS,
    log: Callable[[str], None] | None = None,
) -> TfliteExportResult:
    """Load ``model`` with ``weights`` (as every command does), then ``export_tflite_network``."""
    check_settings(int8, calibration, int8_input, float_layers)
    check_writable(output)
    from ...runtime.torch_engine import TorchEngine  # torch: only once an export really runs

    started = time.perf_counter()
    engine = TorchEngine.load(model, weights, channels_last=False)
    result = export_tflite_network(engine.model, output, int8=int8, calibration=calibration, num_images=num_images,
                                   int8_input=int8_input, float_layers=float_layers, log=log)
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
    float_layers: int = DEFAULT_FLOAT_LAYERS,
    log: Callable[[str], None] | None = None,
) -> TfliteExportResult:
    """Convert a built ``EfficientNet`` at its weights' input size (batch 1), check it in the
    LiteRT interpreter and write ``output``. ``net`` is left as it was (a CPU copy is
    converted). ``float_layers``: with ``int8``, the first convolutions kept float (0: a
    full-integer file; ``tflite_int8``). Raises ``ExportError`` (nothing written) when the fp32
    check fails."""
    check_settings(int8, calibration, int8_input, float_layers)
    replaced = check_writable(output)
    say = log or (lambda message: None)
    started = time.perf_counter()
    net = copy.deepcopy(net).cpu().eval()
    preprocessing = weights_preprocessing(net)
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
        say(f"quantizing to int8 ({int8_input} input, {_layers(float_layers)} float) on {used} calibration "
            "images ...")
        if int8_input == "uint8":
            module, inputs, layout = pixel_network(net, preprocessing), crops.astype(np.float32), INPUT_UINT8_NHWC
            source, pinned, skip, feed = convert(module, size), (0.0, 255.0), 1, crops
        else:
            module, source, pinned, skip = float_module, float_model, None, 0
            inputs = np.stack([preprocessing.normalize(crop).transpose(1, 2, 0) for crop in crops])
            feed = inputs
        with quiet():
            quantized, floats = quantize_int8(source, inputs, pinned, float_layers, skip)
        data = set_interface(quantized, int8_input)
        say("checking: int8 top-1 agreement with torch on the calibration images ...")
        expected = torch_logits(module, inputs)
        actual = run_file(data, feed)
        agreement, compared, precision = float((actual.argmax(1) == expected.argmax(1)).mean()), len(feed), "int8"
        extra = {"quantization": {
            "precision": "int8", "weights": "int8 per-channel", "activations": f"int8, {PERCENTILE}th percentile",
            "bias_correction": True, "float_layers": len(floats), "calibration_images": used,
            "top1_agreement_calibration": agreement, "tool": "ai-edge-quantizer + effnet"}}
    metadata = {**network_metadata(net, preprocessing, layout), "precision": precision, **extra}
    output = Path(output)
    with staged(output) as temporary:
        temporary.write_bytes(write_metadata(data, metadata))
        run_file(temporary, np.zeros((1, size, size, 3), np.uint8 if layout == INPUT_UINT8_NHWC else np.float32))
    return TfliteExportResult(output, net.plan.name, precision, layout, checks, agreement, compared, used,
                              time.perf_counter() - started, metadata, replaced)


def _layers(count: int) -> str:
    return "no layer" if count == 0 else "1 layer" if count == 1 else f"{count} layers"


def _calibration_crops(folder: str | os.PathLike | None, num_images: int,
                       preprocessing: Preprocessing) -> tuple[np.ndarray, Sequence[Path]]:
    """Up to ``num_images`` images of ``folder``, resized and cropped as the weights say (uint8)."""
    from ..quantize.calibration import load_crops, select_images  # QuantizeError: one line, nothing written

    crops, used, _ = load_crops(select_images(folder, num_images), preprocessing)
    return crops, used
