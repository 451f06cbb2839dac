"""``effnet quantize``: a small hand-built ONNX classifier quantized end to end.

The graph has what EfficientNet-Lite exports have (a stride-2 conv + ReLU6, a depthwise conv,
a 1x1 projection, a residual Add, a spatial mean, a Gemm classifier) and effnet metadata, so
every step runs in a few seconds without torch. One layer is made deliberately sensitive:
``conv_b`` scales channel 0 by 1000 (and ``conv_c`` divides it back), so any int8 range over
that tensor crushes the other channels; the sensitivity analysis must find it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from effnet.cli import main
from effnet.data.transforms import Preprocessing
from effnet.runtime.onnx_backend import INPUT_FLOAT, OnnxBackend, encode_metadata, read_metadata
from effnet.tasks import quantize as q

SIZE = 32
LABELS = [f"thing{i}" for i in range(10)]


def tiny_classifier(opset: int = 18) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "w_a": rng.normal(0, 0.3, (16, 3, 3, 3)), "b_a": rng.normal(0, 0.1, 16),
        "w_dw": rng.normal(0, 0.3, (16, 1, 3, 3)), "b_dw": rng.normal(0, 0.1, 16),
        "w_b": rng.normal(0, 0.3, (16, 16, 1, 1)), "b_b": rng.normal(0, 0.1, 16),
        "w_c": rng.normal(0, 0.3, (16, 16, 1, 1)), "b_c": rng.normal(0, 0.1, 16),
        "w_fc": rng.normal(0, 0.5, (10, 16)), "b_fc": rng.normal(0, 0.1, 10),
    }
    weights["w_b"][0] *= 1000.0
    weights["b_b"][0] *= 1000.0
    weights["w_c"][:, 0] /= 1000.0
    initializers = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    initializers += [numpy_helper.from_array(np.float32(0), "zero"), numpy_helper.from_array(np.float32(6), "six"),
                     numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    nodes = [
        helper.make_node("Conv", ["input", "w_a", "b_a"], ["a"], name="conv_a", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["a", "zero", "six"], ["a6"], name="clip_a"),
        helper.make_node("Conv", ["a6", "w_dw", "b_dw"], ["dw"], name="conv_dw", group=16, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["dw", "zero", "six"], ["dw6"], name="clip_dw"),
        helper.make_node("Conv", ["dw6", "w_b", "b_b"], ["b"], name="conv_b"),
        helper.make_node("Relu", ["b"], ["br"], name="relu_b"),
        helper.make_node("Conv", ["br", "w_c", "b_c"], ["c"], name="conv_c"),
        helper.make_node("Add", ["c", "a6"], ["residual"], name="add"),
        helper.make_node("ReduceMean", ["residual", "axes"], ["pooled"], name="mean", keepdims=0) if opset >= 18
        else helper.make_node("ReduceMean", ["residual"], ["pooled"], name="mean", keepdims=0, axes=[2, 3]),
        helper.make_node("Gemm", ["pooled", "w_fc", "b_fc"], ["logits"], name="classifier", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    metadata = {"format": 1, "arch": "tiny_test", "weights": "random", "num_classes": 10, "labels": LABELS,
                "preprocessing": Preprocessing(size=SIZE, crop_fraction=1.0, crop_mode="resize").to_dict(),
                "input": INPUT_FLOAT}
    helper.set_model_props(model, encode_metadata(metadata))
    onnx.checker.check_model(model)
    return model


def write_images(folder: Path, count: int, seed: int = 0) -> Path:
    """Smooth random colour images (different sizes, so resize runs too)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        side = int(rng.integers(40, 80))
        Image.fromarray(coarse).resize((side + 7, side), Image.Resampling.BICUBIC).save(folder / f"img{index:03d}.png")
    return folder


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quantize")
    model = root / "tiny.onnx"
    onnx.save(tiny_classifier(), str(model))
    calib = write_images(root / "calib", 24)
    (calib / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    evaluation = write_images(root / "eval", 12, seed=1)
    (evaluation / "labels.txt").write_text("".join(f"img{i:03d}.png {i % 10}\n" for i in range(12)))
    return {"root": root, "model": model, "calib": calib, "eval": evaluation}


@pytest.fixture(scope="module")
def quantized(workspace: dict[str, Path]) -> tuple[int, Path, dict]:
    output = workspace["root"] / "tiny.int8.onnx"
    code = main(["quantize", str(workspace["model"]), "--calib", str(workspace["calib"]), "--keep-float", "2",
                 "--eval", str(workspace["eval"]), "--eval-labels", str(workspace["eval"] / "labels.txt"),
                 "--threads", "1", "--no-progress", "-o", str(output)])
    return code, output, json.loads(output.with_suffix(".json").read_text())


def test_report_fields(quantized: tuple[int, Path, dict], workspace: dict[str, Path]) -> None:
    code, output, report = quantized
    assert code == 0 and output.is_file()
    assert report["calibration"]["images"] == 24 and report["calibration"]["skipped"] == 1
    assert "broken.jpg" in report["calibration"]["skipped_files"][0]
    assert report["images"] == 12
    # agreement and accuracy recomputed here from each file's own predictions on the eval images
    fp32, int8 = OnnxBackend.load(None, str(workspace["model"])), OnnxBackend.load(None, str(output))
    images = [np.asarray(Image.open(workspace["eval"] / f"img{i:03d}.png").convert("RGB")) for i in range(12)]
    batch = np.stack([fp32.preprocessing(image) for image in images])
    fp32_top1, int8_top1 = fp32(batch).argmax(1), int8(batch).argmax(1)
    labels = np.arange(12) % 10
    assert report["top1_agreement"] == pytest.approx(np.mean(fp32_top1 == int8_top1))
    assert report["accuracy"]["fp32"] == pytest.approx(np.mean(fp32_top1 == labels))
    assert report["accuracy"]["int8"] == pytest.approx(np.mean(int8_top1 == labels))
    assert report["size_mb"]["fp32"] == pytest.approx(workspace["model"].stat().st_size / 1e6)
    for model in ("fp32", "int8"):
        assert report["speed"][model]["latency_bs1_ms"] > 0 and report["speed"][model]["throughput_bs16_img_s"] > 0
    errors = [row["relative_error"] for row in report["sensitivity"]]
    assert errors == sorted(errors, reverse=True)
    assert {row["layer"] for row in report["sensitivity"]} == {"conv_a", "conv_dw", "conv_b", "conv_c", "classifier"}


def test_int8_ops_and_agreement(quantized: tuple[int, Path, dict], workspace: dict[str, Path]) -> None:
    """onnxruntime runs the convolutions as int8 kernels, and the result stays close to float."""
    _, output, report = quantized
    assert report["int8_ops"].get("QLinearConv", 0) >= 2
    assert report["relative_logits_error"] < 0.01
    assert report["top1_agreement"] >= 0.9


def test_sensitive_layers_kept_float(quantized: tuple[int, Path, dict]) -> None:
    """The x1000 channel makes conv_b and conv_c (the layers that write and read that tensor)
    the most sensitive by far; with --keep-float 2 both stay float Convs in the output graph."""
    _, output, report = quantized
    ranked = report["sensitivity"]
    assert {row["layer"] for row in ranked[:2]} == {"conv_b", "conv_c"}
    assert ranked[1]["relative_error"] > 10 * ranked[2]["relative_error"]
    assert sorted(report["float_layers"]) == ["conv_b", "conv_c"] and ranked[1]["kept_float"]
    graph = onnx.load(str(output)).graph
    initializers = {init.name for init in graph.initializer}
    convs = {node.name: node for node in graph.node if node.op_type == "Conv"}
    assert all(convs[name].input[1] in initializers for name in ("conv_b", "conv_c"))  # float weights
    assert all(convs[name].input[1] not in initializers for name in ("conv_a", "conv_dw"))  # DequantizeLinear


def test_output_runs_in_the_onnx_backend_with_metadata(quantized: tuple[int, Path, dict],
                                                       workspace: dict[str, Path]) -> None:
    _, output, _ = quantized
    metadata = read_metadata(output)
    source = read_metadata(workspace["model"])
    assert {k: metadata[k] for k in source} == source
    assert metadata["quantization"]["calibration_images"] == 24
    backend = OnnxBackend.load(None, str(output))
    assert backend.labels == tuple(LABELS) and backend.preprocessing.size == SIZE
    image = np.asarray(Image.open(workspace["eval"] / "img000.png"))
    batch = backend.preprocessing(image)[None]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(backend(batch), session.run(None, {"input": batch})[0], rtol=1e-5, atol=1e-5)


def test_predict_command_uses_the_int8_file(quantized: tuple[int, Path, dict], workspace: dict[str, Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _, output, _ = quantized
    capsys.readouterr()
    assert main(["predict", "--backend", "onnx", "--weights", str(output), str(workspace["eval"] / "img001.png")]) == 0
    assert "thing" in capsys.readouterr().out


def test_prepare_graph_keeps_values(workspace: dict[str, Path]) -> None:
    """ReduceMean over H, W -> GlobalAveragePool (+ Flatten): same logits."""
    model = tiny_classifier()
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    before = q._session(model).run(None, {"input": x})[0]
    prepared = q.prepare_graph(model)
    assert "ReduceMean" not in {node.op_type for node in prepared.graph.node}
    np.testing.assert_allclose(q._session(prepared).run(None, {"input": x})[0], before, rtol=1e-5, atol=1e-5)


def test_bias_correction_removes_the_mean_error() -> None:
    """After correction the int8-rounded layer's mean output over the data equals float's."""
    model = tiny_classifier()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 3, SIZE, SIZE)).astype(np.float32)
    means = q.conv_input_means(model, iter([x]), "input")
    weight = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w_dw"))
    rounded = q.quantized_weight(weight, "s8")
    mean_in = means["a6"]
    shift = (rounded - weight).reshape(16, -1).sum(axis=1) * mean_in
    bias = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b_dw")).copy()
    assert q.correct_biases(model, means, kinds={}, keep_float={"conv_a", "conv_b", "conv_c", "classifier"}) == 1
    corrected = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "b_dw"))
    np.testing.assert_allclose(corrected, bias - shift, rtol=1e-5, atol=1e-6)


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    capsys.readouterr()
    assert main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("effnet: error:") and expected in error


def test_bad_inputs_fail_cleanly(workspace: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out" / "x.int8.onnx"
    calib = str(workspace["calib"])
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("hello, I am a text file")
    _fails(capsys, ["quantize", str(not_onnx), "--calib", calib, "-o", str(output)], "not an ONNX model")
    old = tmp_path / "old.onnx"
    onnx.save(tiny_classifier(opset=11), str(old))
    _fails(capsys, ["quantize", str(old), "--calib", calib, "-o", str(output)], "opset 11 is not supported")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    _fails(capsys, ["quantize", str(workspace["model"]), "--calib", str(empty), "-o", str(output)], "no images")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("a.jpg", "b.png"):
        (corrupt / name).write_bytes(b"not an image at all")
    _fails(capsys, ["quantize", str(workspace["model"]), "--calib", str(corrupt), "-o", str(output)],
           "none of the 2 calibration images can be read")
    assert not output.parent.exists() or not any(output.parent.iterdir())


def test_nothing_half_written_when_the_report_fails(workspace: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """An error after quantization (bad evaluation labels) leaves no output and no temp file."""
    output = tmp_path / "x.int8.onnx"
    bad_labels = tmp_path / "labels.txt"
    bad_labels.write_text("img000.png not_a_class\n")
    _fails(capsys, ["quantize", str(workspace["model"]), "--calib", str(workspace["calib"]), "--num-images", "4",
                    "--keep-float", "0", "--eval", str(workspace["eval"]), "--eval-labels", str(bad_labels),
                    "--no-speed", "-o", str(output)], "cannot map class 'not_a_class'")
    assert list(tmp_path.iterdir()) == [bad_labels]


@pytest.mark.slow
def test_lite0_real_weights_agree_on_photos(tmp_path: Path, photos: dict[str, np.ndarray]) -> None:
    """Lite0 with its ImageNet weights, calibrated on crops of real photos: the int8 file gives
    the fp32 top-1 on the four acceptance photos, and nearly all convolutions run int8."""
    from effnet.tasks.export import export

    model = tmp_path / "lite0.onnx"
    export("efficientnet_lite0", "default", model)
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib"
    calib.mkdir()
    for name, image in photos.items():
        height, width = image.shape[:2]
        for k in range(8):
            h, w = int(height * rng.uniform(0.5, 1)), int(width * rng.uniform(0.5, 1))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            crop = image[top : top + h, left : left + w]
            Image.fromarray(crop[:, ::-1] if k % 2 else crop).save(calib / f"{name}_{k}.png")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    for name, image in photos.items():
        Image.fromarray(image).save(evaluation / f"{name}.png")
    result = q.quantize(model, calib, tmp_path / "lite0.int8.onnx", eval_dir=evaluation, speed=False)
    report = result.report
    assert report["images"] == 4 and report["top1_agreement"] == 1.0
    assert report["relative_logits_error"] < 0.05
    assert report["int8_ops"]["QLinearConv"] >= 45  # of Lite0's 49 convolutions
    assert report["size_mb"]["int8"] < 0.3 * report["size_mb"]["fp32"]


def test_size_pins_the_input(workspace: dict[str, Path], tmp_path: Path) -> None:
    """``--size`` builds the int8 file for another resolution; its metadata says so."""
    output = tmp_path / "tiny16.int8.onnx"
    q.quantize(workspace["model"], workspace["calib"], output, num_images=6, keep_float=0, size=16, speed=False)
    dims = [d.dim_value or d.dim_param for d in onnx.load(str(output)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 16, 16] and isinstance(dims[0], str)  # the batch stays dynamic
    metadata = read_metadata(output)
    assert metadata["preprocessing"]["size"] == 16 and metadata["quantization"]["input_size"] == 16


def test_pair_safe_scales_bound_every_kernel_pair() -> None:
    """The scale is set by the largest same-signed pair the AVX2 kernel adds (neighbouring input
    channels of a 1x1 conv; any two weights of a larger kernel), so no pair of int8 weights
    sums past 128 in magnitude (255 x 128 fits int16)."""
    one_by_one = np.array([1.0, 0.5, -0.25, -1.0], np.float32).reshape(1, 4, 1, 1)
    assert q.pair_safe_scales(one_by_one)[0] == pytest.approx(1.5 / 127)  # pair (1.0, 0.5)
    three_by_three = np.array([1.0, -0.5, -0.25, 0.75], np.float32).reshape(1, 1, 2, 2)
    assert q.pair_safe_scales(three_by_three)[0] == pytest.approx(1.75 / 127)  # 1.0 and 0.75, not neighbours
    weights = np.random.default_rng(0).normal(0, 1, (64, 33)).astype(np.float32)  # a Gemm, odd input count
    scales = q.pair_safe_scales(weights)
    ints = np.round(weights / scales[:, None])
    assert np.abs(ints).max() <= 127
    pairs = np.pad(ints, ((0, 0), (0, 1))).reshape(64, -1, 2)
    assert np.clip(pairs, 0, None).sum(-1).max() <= 128 and np.clip(-pairs, 0, None).sum(-1).max() <= 128
    assert np.median(np.abs(ints).max(1)) > 64  # finer than the 7-bit range
    np.testing.assert_allclose(q.quantized_weight(weights, "s8-safe"), ints * scales[:, None], rtol=1e-6)


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
    import platform

    path = _one_conv(tmp_path)
    calibration = np.random.default_rng(0).uniform(0, 6, (8, 8, 4, 4)).astype(np.float32)
    calibration[0] = 6.0
    settings = q.Settings(method="minmax", gemm_weights=kind)  # the output range must reach the all-6 input
    cache = tmp_path / "ranges.json"
    q.calibrate(path, calibration, settings, cache)
    output = tmp_path / f"{kind}.onnx"
    q.quantize_model(path, output, cache, settings)
    top = np.full((1, 8, 4, 4), 6.0, np.float32)
    kernels = q._session(output).run(None, {"input": top})[0]
    emulated = q._session(output, optimize=False).run(None, {"input": top})[0]
    assert emulated == pytest.approx(6.0 * 7.0, rel=0.02)  # 4 x 1.0 + 4 x 0.75, times 6
    if kind == "s8-safe":
        np.testing.assert_allclose(kernels, emulated, rtol=0.02)
    elif platform.machine().lower() in ("x86_64", "amd64") and not q.cpu_has_vnni():
        assert kernels.max() < 0.9 * emulated.min()  # the 16-bit pair sums clipped


def test_float_budget_counts_multiply_adds_and_weights() -> None:
    """``--keep-float auto`` only considers float layers that cost little time and file size:
    a cheap classifier with many weights is as much out of budget as a big early conv."""
    layers = [q.Layer("stem", "stem 3x3", ["a"], macs=30, weights=1),
              q.Layer("pw", "expand 1x1", ["b"], macs=960, weights=10),
              q.Layer("classifier", "classifier", ["c"], macs=10, weights=89)]
    assert q.within_float_budget(layers[:1], layers)  # 3% of the multiply-adds, 1% of the weights
    assert not q.within_float_budget(layers[1:2], layers)  # 96% of the multiply-adds
    assert not q.within_float_budget(layers[2:], layers)  # 89% of the weights
    assert q.within_float_budget([], layers)
