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
#: ``auto``, on every CPU. An int8 file is often built on one machine and run on another, and
#: plain ``s8`` weights saturate onnxruntime's AVX2 kernels (x86 without VNNI): a Lite0 file
#: built with ``s8`` on the AVX512-VNNI machine agreed with fp32 on 94 of 96 held-out photos
#: there and on 76 of 96 under AVX2 (relative logits error 0.0039 -> 0.133; AVX2 run in
#: ``qemu-x86_64 -cpu Haswell``). ``s8-safe`` cannot saturate, so its file computes the same
#: on both kinds (93 of 96 on each, error 0.0054 on each) and, over the two held-out halves of
#: the 24 photos, agreed as often as ``s8`` on VNNI (186 of 192 both; 97.4% for ``u8``, whose
#: uint8 x uint8 kernels are slower), at the same speed (same kernels). docs/deploy.md.
AUTO_GEMM_WEIGHTS = "s8-safe"
#: Opsets onnxruntime's QDQ quantizer handles with per-channel weights (axis on DequantizeLinear).
MIN_OPSET, MAX_OPSET = 13, 23
#: Ops quantized by default; ``Clip``/``Relu`` are folded into the preceding conv's range.
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul", "Add", "Clip", "Relu", "Pad", "GlobalAveragePool", "Flatten")
#: Ops left float by default (SiLU's ``Sigmoid`` + ``Mul``, squeeze-excitation's ``ReduceMean``):
#: ``benchmarks/quantize_bench.py`` measures B0 with them quantized too.
FLOAT_OPS = ("Sigmoid", "Mul", "ReduceMean")
#: Images the per-layer sensitivity analysis compares logits on (it only ranks the layers).
SENSITIVITY_IMAGES = 16
#: Images the keep-float trials compare logits on (at most; spread over the calibration set).
#: 16 were too few to tell trials apart: on Lite0 the 0- and 1-float-layer trials measured
#: 0.0064 and 0.0060 on 16 images, 0.0083 and 0.0087 on 120.
SEARCH_IMAGES = 128
#: ``--keep-float auto`` keeps at most this many layers float ...
AUTO_MAX_FLOAT = 4
#: ... tried among this many of the most sensitive layers ...
AUTO_CANDIDATES = 8
#: ... holding at most this share of the model's multiply-adds and of its weights (a float
#: layer runs at fp32 speed: Lite0's fourth most sensitive layer, an expand 1x1 at 112x112
#: with 5% of the multiply-adds, cut the int8 speedup at batch 16 from 1.56x to 1.17x; a
#: float classifier, 0.3% of the multiply-adds, kept 27% of the weights in float32) ...
AUTO_FLOAT_MACS = 0.05
#: ... and a layer is kept only when it cuts the logits error of the model so far by this
#: share (float layers cost time), so the chosen error never grows with the float layers.
AUTO_MIN_GAIN = 0.1
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
