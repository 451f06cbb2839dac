"""What an int8 run may be asked for, and the recipe's fixed numbers (each with its reason).

No ONNX imports here: the command line reads these choices to build its options.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import EffnetError

METHODS = ("minmax", "percentile", "entropy")
#: How GEMM-backed layers (full and 1x1 convs, the classifier) store their weights: ``s8``
#: int8 in [-127, 127]; ``s7`` int8 in [-64, 64]; ``u8`` uint8 around a zero point of 128;
#: ``s8-safe`` int8 scaled so no pair the AVX2 kernels add in 16 bits saturates.
#: Depthwise convs always use ``s8`` (their kernel multiplies in 32 bits).
WEIGHT_KINDS = ("s8", "s7", "u8", "s8-safe")
#: ``auto`` on x86 CPUs without VNNI (see the package docstring).
AVX2_GEMM_WEIGHTS = "s8-safe"
#: Opsets onnxruntime's QDQ quantizer handles with per-channel weights (axis on DequantizeLinear).
MIN_OPSET, MAX_OPSET = 13, 23
#: Ops quantized by default; ``Clip``/``Relu`` are folded into the preceding conv's range.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Clip", "Relu", "Pad", "GlobalAveragePool", "Flatten")
FLOAT_OPS = ("Sigmoid", "Mul", "ReduceMean")
#: Images the sensitivity analysis and the keep-float trials compare logits on.
SENSITIVITY_IMAGES = 16
#: ``--keep-float auto`` tries keeping 0 to this many layers float (the most sensitive that fit)
AUTO_MAX_FLOAT = 4
#: ... holding at most this share of the model's multiply-adds and of its weights (a float
#: layer runs at fp32 speed: Lite0's fourth most sensitive layer, an expand 1x1 at 112x112
#: with 5% of the multiply-adds, cut the int8 speedup at batch 16 from 1.56x to 1.17x; a
#: float classifier, 0.3% of the multiply-adds, kept 27% of the weights in float32) ...
AUTO_FLOAT_MACS = 0.05
#: ... and takes the fewest whose error is within this factor of the best (float layers cost time).
AUTO_TOLERANCE = 1.1
#: Images per onnxruntime run when comparing or calibrating.
BATCH_SIZE = 16


class QuantizeError(EffnetError):
    """Quantization could not run (bad model, bad calibration images); nothing was written."""


@dataclass
class Settings:
    """How one run quantizes: what every ``quantize_static`` call of the run shares."""

    method: str = "percentile"
    per_channel: bool = True
    gemm_weights: str = "s8"
    bias_correction: bool = True
    op_types: tuple[str, ...] = QUANTIZED_OPS
