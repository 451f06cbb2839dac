"""Weight scales against onnxruntime's int8 kernels, and bias correction against its definition."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from effnet.deploy.quantize.calibration import calibrate
from effnet.deploy.quantize.recipe import AUTO_GEMM_WEIGHTS, Settings
from effnet.deploy.quantize.scales import (
    conv_input_means, correct_biases, cpu_has_vnni, gemm_weight_names, gemm_weights_for, pair_safe_scales,
    quantize_model, quantized_weight,
)
from effnet.deploy.quantize.sessions import session


def test_pair_safe_scales_bound_every_kernel_pair() -> None:
    """The scale is set by the largest same-signed pair the AVX2 kernel adds (neighbouring input
    channels of a 1x1 conv; any two weights of a larger kernel), so no pair of int8 weights
    sums past 128 in magnitude (255 x 128 fits int16)."""
    one_by_one = np.array([1.0, 0.5, -0.25, -1.0], np.float32).reshape(1, 4, 1, 1)
    assert pair_safe_scales(one_by_one)[0] == pytest.approx(1.5 / 127)  # pair (1.0, 0.5)
    three_by_three = np.array([1.0, -0.5, -0.25, 0.75], np.float32).reshape(1, 1, 2, 2)
    assert pair_safe_scales(three_by_three)[0] == pytest.approx(1.75 / 127)  # 1.0 and 0.75, not neighbours
    weights = np.random.default_rng(0).normal(0, 1, (64, 33)).astype(np.float32)  # a Gemm, odd input count
    scales = pair_safe_scales(weights)
    ints = np.round(weights / scales[:, None])
    assert np.abs(ints).max() <= 127
    pairs = np.pad(ints, ((0, 0), (0, 1))).reshape(64, -1, 2)
    assert np.clip(pairs, 0, None).sum(-1).max() <= 128 and np.clip(-pairs, 0, None).sum(-1).max() <= 128
    assert np.median(np.abs(ints).max(1)) > 64  # finer than the 7-bit range
    np.testing.assert_allclose(quantized_weight(weights, "s8-safe"), ints * scales[:, None], rtol=1e-6)


def _one_conv(tmp_path: Path) -> Path:
    """One 1x1 conv whose neighbouring input channels have large same-signed weights: on
    inputs at the top of their range, an 8-bit pair product overflows 16 bits."""
    weight = np.ones((4, 8, 1, 1), np.float32)
    weight[:, 1::2] = 0.75
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["out"], name="conv")], "one_conv",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 8, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [None, 4, 4, 4])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "one_conv.onnx"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", ["s8-safe", "s8"])
def test_gemm_weight_kinds_against_the_int8_kernels(tmp_path: Path, kind: str) -> None:
    """onnxruntime's int8 kernels give what the same QDQ file gives evaluated op by op in float
    with ``s8-safe`` weights, on every CPU; plain ``s8`` weights saturate on x86 without VNNI."""
    path = _one_conv(tmp_path)
    calibration = np.random.default_rng(0).uniform(0, 6, (8, 8, 4, 4)).astype(np.float32)
    calibration[0] = 6.0
    settings = Settings(method="minmax", gemm_weights=kind)  # the output range must reach the all-6 input
    cache = tmp_path / "ranges.json"
    calibrate(path, calibration, settings, cache)
    output = tmp_path / f"{kind}.onnx"
    quantize_model(path, output, cache, settings)
    top = np.full((1, 8, 4, 4), 6.0, np.float32)
    kernels = session(output).run(None, {"input": top})[0]
    emulated = session(output, optimize=False).run(None, {"input": top})[0]
    assert emulated == pytest.approx(6.0 * 7.0, rel=0.02)  # 4 x 1.0 + 4 x 0.75, times 6
    if kind == "s8-safe":
        np.testing.assert_allclose(kernels, emulated, rtol=0.02)
    elif platform.machine().lower() in ("x86_64", "amd64") and not cpu_has_vnni():
        assert kernels.max() < 0.9 * emulated.min()  # the 16-bit pair sums clipped


def test_auto_weight_kind_cannot_saturate_on_any_cpu() -> None:
    """A file is run on other CPUs than the one that quantized it: auto is s8-safe everywhere."""
    assert gemm_weights_for("auto") == AUTO_GEMM_WEIGHTS == "s8-safe"
    assert gemm_weights_for("s8") == "s8"


def test_gemm_weights_are_those_of_every_layer_but_depthwise(tiny_graph) -> None:
    assert gemm_weight_names(tiny_graph()) == {"w_a", "w_b", "w_c", "w_fc"}


def test_bias_correction_removes_the_mean_error(tiny_graph) -> None:
    """After correction the int8-rounded layer's mean output over the data equals float's."""
    model = tiny_graph()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    means = conv_input_means(model, iter([x]), "input")
    weight = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w_dw"))
    rounded = quantized_weight(weight, "s8")
    mean_in = means["a6"]
    shift = (rounded - weight).reshape(16, -1).sum(axis=1) * mean_in
    bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b_dw")).copy()
    assert correct_biases(model, means, kinds={}, keep_float={"conv_a", "conv_b", "conv_c", "classifier"}) == 1
    corrected = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b_dw"))
    np.testing.assert_allclose(corrected, bias - shift, rtol=1e-5, atol=1e-6)
