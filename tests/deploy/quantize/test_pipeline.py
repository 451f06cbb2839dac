"""``quantize()`` end to end on the tiny classifier (tests/deploy/conftest.py): the report's
numbers recomputed from the files themselves, the int8 kernels really used, the sensitive
layers found and kept float, the metadata carried over, nothing half-written on failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from PIL import Image

from effnet.data.datasets import DatasetError
from effnet.deploy.quantize import pipeline
from effnet.deploy.quantize.pipeline import QuantizeResult, quantize
from effnet.errors import EffnetError, UsageError
from effnet.runtime import open_engine
from effnet.runtime.onnx_metadata import read_metadata
from effnet.runtime.predictor import Predictor


@pytest.fixture(scope="module")
def quantized(tiny_workspace: dict[str, Path]) -> QuantizeResult:
    return quantize(tiny_workspace["model"], tiny_workspace["calib"], tiny_workspace["root"] / "tiny.int8.onnx",
                    keep_float=2, eval_dir=tiny_workspace["eval"], eval_labels=tiny_workspace["eval"] / "labels.txt",
                    threads=1)


def test_report_fields(quantized: QuantizeResult, tiny_workspace: dict[str, Path]) -> None:
    report = quantized.report
    assert quantized.path.is_file()
    assert report["calibration"]["images"] == 24 and report["calibration"]["skipped"] == 1
    assert "broken.jpg" in report["calibration"]["skipped_files"][0]
    assert report["images"] == 12
    # agreement and accuracy recomputed here from each file's own predictions on the eval images
    fp32 = open_engine("onnxruntime", None, str(tiny_workspace["model"]))
    int8 = open_engine("onnxruntime", None, str(quantized.path))
    images = [np.asarray(Image.open(tiny_workspace["eval"] / f"img{i:03d}.png").convert("RGB")) for i in range(12)]
    batch = np.stack([fp32.preprocessing(image) for image in images])
    fp32_top1, int8_top1 = fp32(batch).argmax(1), int8(batch).argmax(1)
    labels = np.arange(12) % 10
    assert report["top1_agreement"] == pytest.approx(np.mean(fp32_top1 == int8_top1))
    assert report["accuracy"]["fp32"] == pytest.approx(np.mean(fp32_top1 == labels))
    assert report["accuracy"]["int8"] == pytest.approx(np.mean(int8_top1 == labels))
    assert report["size_mb"]["fp32"] == pytest.approx(tiny_workspace["model"].stat().st_size / 1e6)
    assert report["speed"]["threads"] == 1
    for model in ("fp32", "int8"):
        assert report["speed"][model]["latency_bs1_ms"] > 0 and report["speed"][model]["throughput_bs16_img_s"] > 0
    errors = [row["relative_error"] for row in report["sensitivity"]]
    assert errors == sorted(errors, reverse=True)
    assert {row["layer"] for row in report["sensitivity"]} == {"conv_a", "conv_dw", "conv_b", "conv_c", "classifier"}


def test_int8_ops_and_agreement(quantized: QuantizeResult) -> None:
    """onnxruntime runs the convolutions as int8 kernels, and the result stays close to float."""
    report = quantized.report
    assert report["int8_ops"].get("QLinearConv", 0) >= 2
    assert report["relative_logits_error"] < 0.01
    assert report["top1_agreement"] >= 0.9


def test_sensitive_layers_kept_float(quantized: QuantizeResult) -> None:
    """The x1000 channel makes conv_b and conv_c (the layers that write and read that tensor)
    the most sensitive by far; with keep_float=2 both stay float Convs in the output graph."""
    ranked = quantized.report["sensitivity"]
    assert {row["layer"] for row in ranked[:2]} == {"conv_b", "conv_c"}
    assert ranked[1]["relative_error"] > 10 * ranked[2]["relative_error"]
    assert sorted(quantized.report["float_layers"]) == ["conv_b", "conv_c"] and ranked[1]["kept_float"]
    assert sorted(layer.name for layer in quantized.layers if layer.kept_float) == ["conv_b", "conv_c"]
    graph = onnx.load(str(quantized.path)).graph
    initializers = {init.name for init in graph.initializer}
    convs = {node.name: node for node in graph.node if node.op_type == "Conv"}
    assert all(convs[name].input[1] in initializers for name in ("conv_b", "conv_c"))  # float weights
    assert all(convs[name].input[1] not in initializers for name in ("conv_a", "conv_dw"))  # DequantizeLinear


def test_output_runs_in_the_onnx_engine_with_metadata(quantized: QuantizeResult,
                                                      tiny_workspace: dict[str, Path]) -> None:
    metadata = read_metadata(quantized.path)
    source = read_metadata(tiny_workspace["model"])
    assert {k: metadata[k] for k in source} == source
    assert metadata["quantization"]["calibration_images"] == 24
    assert metadata["quantization"]["float_layers"] == quantized.report["float_layers"]
    engine = open_engine("onnxruntime", None, str(quantized.path))
    assert engine.labels == tuple(source["labels"]) and engine.preprocessing.size == 32
    image = np.asarray(Image.open(tiny_workspace["eval"] / "img000.png"))
    batch = engine.preprocessing(image)[None]
    session = onnxruntime.InferenceSession(str(quantized.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(engine(batch), session.run(None, {"input": batch})[0], rtol=1e-5, atol=1e-5)


def test_predictor_uses_the_int8_file(quantized: QuantizeResult, tiny_workspace: dict[str, Path]) -> None:
    predictor = Predictor(weights=str(quantized.path))
    (best, *_) = predictor(str(tiny_workspace["eval"] / "img001.png"))
    assert predictor.engine.name == "onnxruntime"
    assert best.label == read_metadata(tiny_workspace["model"])["labels"][best.index]


def test_size_pins_the_input(tiny_workspace: dict[str, Path], tmp_path: Path) -> None:
    """``size`` builds the int8 file for another resolution; its metadata says so."""
    output = tmp_path / "tiny16.int8.onnx"
    output.write_text("an older file, replaced as cp would")
    result = quantize(tiny_workspace["model"], tiny_workspace["calib"], output, num_images=6, keep_float=0, size=16,
                      speed=False)
    assert result.replaced is True
    dims = [d.dim_value or d.dim_param for d in onnx.load(str(output)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 16, 16] and isinstance(dims[0], str)  # the batch stays dynamic
    metadata = read_metadata(output)
    assert metadata["preprocessing"]["size"] == 16 and metadata["quantization"]["input_size"] == 16


def test_a_bad_evaluation_set_fails_before_any_work(tiny_workspace: dict[str, Path], tmp_path: Path) -> None:
    output = tmp_path / "x.int8.onnx"
    bad_labels = tmp_path / "labels.txt"
    bad_labels.write_text("img000.png not_a_class\n")
    with pytest.raises(DatasetError, match="cannot map class 'not_a_class'"):
        quantize(tiny_workspace["model"], tiny_workspace["calib"], output, num_images=4, keep_float=0,
                 eval_dir=tiny_workspace["eval"], eval_labels=bad_labels, speed=False)
    assert list(tmp_path.iterdir()) == [bad_labels]


def test_nothing_half_written_when_the_report_fails(tiny_workspace: dict[str, Path], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The int8 file is only renamed into place once it was measured: a failure there leaves
    no output and no temporary file."""
    def failing_report(*args, **kwargs):
        raise EffnetError("the measurement failed")

    monkeypatch.setattr(pipeline, "build_report", failing_report)
    with pytest.raises(EffnetError, match="the measurement failed"):
        quantize(tiny_workspace["model"], tiny_workspace["calib"], tmp_path / "x.int8.onnx", num_images=4,
                 keep_float=0, speed=False)
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_be_written_fails_before_any_work(tiny_workspace: dict[str, Path], tmp_path: Path,
                                                               unwritable_folder: Path) -> None:
    """Checked before the calibration folder is even looked at (it does not exist here), and
    named as given: never a temporary file."""
    (tmp_path / "notes.txt").write_text("a file")
    cases = [(tmp_path / "notes.txt" / "x.int8.onnx", "is a file, not a folder"),
             (unwritable_folder / "x.int8.onnx", "cannot create files in"),
             (tiny_workspace["model"], "it is the float model itself")]
    for output, reason in cases:
        with pytest.raises(UsageError, match=f"cannot write {output}: .*{reason}") as error:
            quantize(tiny_workspace["model"], tmp_path / "no_calibration_here", output)
        assert ".tmp" not in str(error.value)
    assert read_metadata(tiny_workspace["model"])["arch"] == "tiny_test"  # the float model is intact


@pytest.mark.parametrize("options, message", [
    ({"method": "median"}, "--method must be one of"),
    ({"num_images": 0}, "--num-images must be at least 1"),
    ({"gemm_weights": "s4"}, "--gemm-weights must be auto or one of"),
    ({"size": 4}, "--size must be at least 8"),
])
def test_impossible_settings_fail_before_reading_anything(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        quantize(tmp_path / "missing.onnx", tmp_path / "missing", tmp_path / "out.int8.onnx", **options)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_lite0_real_weights_agree_on_held_out_photos(lite0_dynamic: Path, tmp_path: Path,
                                                     acceptance_photos: dict[str, np.ndarray],
                                                     photo_thumbnails: dict[str, Image.Image]) -> None:
    """Lite0 with its ImageNet weights, calibrated on crops of four real photos and compared on
    three others it never saw (rocket, hopper, flower): the int8 file gives the fp32 top-1 on all of them, nearly all
    convolutions run int8, and with three float layers asked for, each one reported float is
    float in the graph onnxruntime runs (the third most sensitive layer sits between int8
    layers: before, it was "kept float" and ran with per-tensor int8 weights)."""
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib"
    calib.mkdir()
    for name, image in acceptance_photos.items():
        height, width = image.shape[:2]
        for k in range(8):
            h, w = int(height * rng.uniform(0.5, 1)), int(width * rng.uniform(0.5, 1))
            top, left = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
            crop = image[top : top + h, left : left + w]
            Image.fromarray(crop[:, ::-1] if k % 2 else crop).save(calib / f"{name}_{k}.png")
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    held_out = {name: image for name, image in photo_thumbnails.items() if name not in acceptance_photos}
    for name, image in held_out.items():
        image.save(evaluation / f"{name}.png")
    report = quantize(lite0_dynamic, calib, tmp_path / "lite0.int8.onnx", eval_dir=evaluation, speed=False).report
    assert report["images"] == len(held_out) == 3 and report["top1_agreement"] == 1.0
    assert report["relative_logits_error"] < 0.05
    assert report["int8_ops"]["QLinearConv"] >= 45  # of Lite0's 49 convolutions
    assert report["size_mb"]["int8"] < 0.3 * report["size_mb"]["fp32"]
    curve = [point["relative_error"] for point in report["keep_float"]["curve"]]
    assert all(later < earlier for earlier, later in zip(curve, curve[1:]))
    three = quantize(lite0_dynamic, calib, tmp_path / "three.int8.onnx", keep_float=3, speed=False)
    assert len(three.report["float_layers"]) == 3
    float_weights = float_weights_onnxruntime_runs(three.path)
    assert len(float_weights) == 3
    assert all(any(name.startswith(layer) for name in float_weights) for layer in three.report["float_layers"])


def float_weights_onnxruntime_runs(path: Path) -> set[str]:
    """Float weight initializers that a float ``Conv``/``Gemm`` still reads once onnxruntime has
    applied its basic graph rewrites (where ``WeightBiasQuantization`` re-quantizes float layers)."""
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(path.with_suffix(".basic.onnx"))
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(options.optimized_model_filepath).graph
    floats = {init.name for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT}
    return {node.input[1] for node in graph.node if node.op_type in ("Conv", "Gemm") and node.input[1] in floats}


def test_layers_kept_float_run_float_in_onnxruntime(tiny_workspace: dict[str, Path], tmp_path: Path) -> None:
    """conv_c and conv_b, the most sensitive layers, each sit between int8 tensors: kept float
    alone, onnxruntime would quantize its weights per-tensor (for conv_b, crushing all but its
    x1000 channel). So with one float layer allowed both stay int8 with per-channel weights and
    the classifier (its output is the graph's) is the one kept float; with two, the pair is
    float together (test_sensitive_layers_kept_float). Whatever is reported float is float in
    the graph onnxruntime runs."""
    result = quantize(tiny_workspace["model"], tiny_workspace["calib"], tmp_path / "one.int8.onnx", keep_float=1,
                      speed=False)
    assert result.report["float_layers"] == ["classifier"]
    tried_alone = result.report["keep_float"]["trials"][1:3]
    assert sorted(trial["float_layers"][0] for trial in tried_alone) == ["conv_b", "conv_c"]
    assert all(trial["outcome"] == "runs int8" and trial["relative_error"] is None for trial in tried_alone)
    assert float_weights_onnxruntime_runs(result.path) == {"w_fc"}


def test_auto_search_never_gets_worse(tiny_workspace: dict[str, Path], tmp_path: Path) -> None:
    """Each float layer the auto search keeps lowers the error; what it rejects is reported."""
    report = quantize(tiny_workspace["model"], tiny_workspace["calib"], tmp_path / "auto.int8.onnx",
                      speed=False).report
    curve = [point["relative_error"] for point in report["keep_float"]["curve"]]
    assert len(curve) == report["keep_float"]["chosen"] + 1
    assert all(later < earlier for earlier, later in zip(curve, curve[1:]))
    assert {trial["outcome"] for trial in report["keep_float"]["trials"]} <= {"kept", "no gain", "runs int8"}
    kept = {row["layer"] for row in report["sensitivity"] if row["kept_float"]}
    assert float_weights_onnxruntime_runs(tmp_path / "auto.int8.onnx") == {f"w_{name[5:]}" if name != "classifier"
                                                                            else "w_fc" for name in kept}


def test_a_fixed_batch_file_is_one_line_naming_the_dynamic_export(tmp_path: Path, tiny_graph) -> None:
    """Calibration and the search run batches of several images: a --batch 1 export cannot take
    them (it failed deep in onnxruntime before), so it is refused first, with what to do."""
    model = tiny_graph()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    fixed = tmp_path / "b1.onnx"
    onnx.save(model, str(fixed))
    calib = tmp_path / "calib"
    calib.mkdir()
    Image.new("RGB", (40, 40), (90, 120, 30)).save(calib / "a.jpg")
    with pytest.raises(EffnetError, match="fixed batch of 1: quantize an export with a dynamic batch"):
        quantize(fixed, calib, tmp_path / "b1.int8.onnx")
    assert not (tmp_path / "b1.int8.onnx").exists()
