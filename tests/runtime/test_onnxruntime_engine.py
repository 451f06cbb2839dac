"""The onnxruntime engine: self-describing files, one-line errors, and no torch at all.

The graphs here are tiny hand-made classifiers (``tiny_classifier`` in tests/conftest.py:
channel means times a fixed matrix) with effnet metadata, so these tests need no export;
the export tests cover real exported networks.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from effnet.cli import main
from effnet.data.images import load_image
from effnet.data.labels import imagenet_names
from effnet.data.transforms import Preprocessing
from effnet.errors import UsageError
from effnet.runtime import open_engine
from effnet.runtime.onnx_metadata import INPUT_BGR, INPUT_FLOAT, INPUT_RGB
from effnet.runtime.exported_file import GuessedPreprocessingWarning
from effnet.runtime.onnxruntime_engine import OnnxModelError, open_session

SRC = Path(__file__).resolve().parents[2] / "src"
CAT = Path(__file__).resolve().parents[2] / "examples" / "images" / "cat.jpg"


def channel_means(images: list[np.ndarray]) -> np.ndarray:
    return np.stack([image.reshape(-1, 3).astype(np.float32).mean(0) for image in images])


def test_the_file_says_what_it_holds(tmp_path: Path, tiny_classifier) -> None:
    engine = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "m.onnx")))
    assert (engine.name, engine.arch, engine.input_layout, engine.num_classes) == (
        "onnxruntime", "efficientnet_lite0", INPUT_FLOAT, 1000)
    assert engine.preprocessing == Preprocessing(size=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    assert engine.labels == imagenet_names() and engine.weights_name == "tiny"


def test_logits_are_the_graph_on_the_preprocessed_batch(tmp_path: Path, tiny_classifier) -> None:
    engine = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "m.onnx")))
    batch = np.stack([engine.preprocessing(load_image(CAT))] * 2)
    np.testing.assert_allclose(engine(batch), tiny_classifier.logits(batch.mean(axis=(2, 3))), rtol=1e-4, atol=1e-4)


def test_image_graphs_take_images_of_any_size_in_order(tmp_path: Path, tiny_classifier) -> None:
    engine = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "m.onnx", layout=INPUT_RGB)))
    assert engine.takes_images
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((5, 7, 3), (9, 4, 3), (5, 7, 3))]
    assert engine.preprocessing(images[0]) is images[0]  # the graph preprocesses
    np.testing.assert_allclose(engine(images), tiny_classifier.logits(channel_means(images)), rtol=1e-4)


def test_bgr_graphs_get_the_channels_they_ask_for(tmp_path: Path, tiny_classifier) -> None:
    """Images reach an engine as RGB (load_image); a BGR graph must see them reversed."""
    image = load_image(CAT)
    rgb = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "rgb.onnx", layout=INPUT_RGB)))
    bgr = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "bgr.onnx", layout=INPUT_BGR)))
    np.testing.assert_allclose(bgr([image])[0], tiny_classifier.logits(channel_means([image[..., ::-1]]))[0],
                               rtol=1e-4)
    np.testing.assert_allclose(rgb([image])[0], tiny_classifier.logits(channel_means([image]))[0], rtol=1e-4)
    assert not np.allclose(bgr([image])[0], rgb([image])[0], rtol=1e-3)


def test_example_input_is_what_the_graph_takes(tmp_path: Path, tiny_classifier) -> None:
    for layout in (INPUT_FLOAT, INPUT_RGB, INPUT_BGR):
        engine = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / f"{layout}.onnx", layout=layout)))
        assert engine(engine.example_input(2)).shape == (2, 1000)


def test_files_without_metadata_fall_back_to_their_shapes(tmp_path: Path, tiny_classifier) -> None:
    with pytest.warns(GuessedPreprocessingWarning):
        engine = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "bare.onnx", metadata=False, size=48)))
    assert (engine.arch, engine.preprocessing.size, engine.num_classes) == ("unknown", 48, 1000)


def test_bad_files_and_mismatches_are_one_line_errors(tmp_path: Path, tiny_classifier,
                                                      capsys: pytest.CaptureFixture) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    with pytest.raises(OnnxModelError, match="onnxruntime cannot load this model"):
        open_engine("onnxruntime", None, str(garbage))
    with pytest.raises(OnnxModelError, match="not found"):
        open_engine("onnxruntime", None, str(tmp_path / "missing.onnx"))
    with pytest.raises(UsageError, match="needs an exported model"):
        open_engine("onnxruntime", "efficientnet_lite0", "default")
    model = tiny_classifier(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="holds efficientnet_lite0, not b0"):
        open_engine("onnxruntime", "b0", str(model))
    assert main(["predict", "--engine", "onnxruntime", "--weights", str(garbage), str(CAT)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("effnet: error:") and len(err.splitlines()) == 1


def test_device_and_threads_are_taken_like_torch_takes_them(tmp_path: Path, tiny_classifier) -> None:
    model = str(tiny_classifier(tmp_path / "m.onnx"))
    engine = open_engine("onnxruntime", None, model, device="cpu", threads=1)
    assert engine.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(UsageError, match=r"^--device cuda: the onnxruntime engine runs on the CPU only"):
        open_engine("onnxruntime", None, model, device="cuda")
    with pytest.raises(UsageError, match="--threads must be at least 1"):
        open_engine("onnxruntime", None, model, threads=0)


def test_predict_on_onnxruntime_never_imports_torch(tmp_path: Path, tiny_classifier) -> None:
    model = tiny_classifier(tmp_path / "m.onnx")
    script = ("import sys; from effnet.cli import main; code = main(sys.argv[1:]); "
              "print(sorted(m for m in sys.modules if m in ('effnet.runtime.onnxruntime_engine', 'onnxruntime') "
              "or m.split('.')[0] == 'torch'))")
    done = subprocess.run(
        [sys.executable, "-c", script, "predict", "--weights", str(model), "--topk", "3", str(CAT)],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC), "PATH": ""}, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("(class ") == 3
    assert done.stdout.splitlines()[-1] == "['effnet.runtime.onnxruntime_engine', 'onnxruntime']"


def test_sessions_can_stop_spinning_after_each_run(tmp_path: Path, tiny_classifier) -> None:
    # measured: with two sessions run in turn, the idle one's spinning threads doubled the other's
    # batch-1 latency (7.6 -> 16.4 ms, Lite0, 2 threads); effnet bench keeps many sessions
    model = tiny_classifier(tmp_path / "m.onnx")
    options = open_session(model, stop_spinning=True).get_session_options()
    assert options.get_session_config_entry("session.force_spinning_stop") == "1"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # the default: onnxruntime's spinning
        open_session(model).get_session_options().get_session_config_entry("session.force_spinning_stop")


def foreign_graph(path: Path, inputs: list[tuple[str, int, list]], outputs: list[tuple[str, list]]) -> Path:
    """An ONNX file effnet did not write: each output is the first input, reshaped, no metadata."""
    nodes = [helper.make_node("Identity", [inputs[0][0]], [outputs[0][0]])]
    nodes += [helper.make_node("Identity", [inputs[0][0]], [name]) for name, _ in outputs[1:]]
    graph = helper.make_graph(
        nodes, "foreign", [helper.make_tensor_value_info(name, kind, shape) for name, kind, shape in inputs],
        [helper.make_tensor_value_info(name, inputs[0][1], shape) for name, shape in outputs],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


@pytest.mark.parametrize("inputs, outputs, found", [
    ([("image", TensorProto.FLOAT, [1, 3, 224, 224])], [("same", [1, 3, 224, 224])],
     "output same [1, 3, 224, 224]"),
    ([("digit", TensorProto.FLOAT, ["N", 1, 28, 28])], [("logits", ["N", 10])], "input digit [N, 1, 28, 28] float32"),
    ([("image", TensorProto.FLOAT, ["N", 3, 32, 32]), ("mask", TensorProto.FLOAT, ["N", 1])],
     [("logits", ["N", 10])], "2 inputs"),
    ([("image", TensorProto.FLOAT, ["N", 10])], [("logits", ["N", 10]), ("probabilities", ["N", 10])],
     "input image [N, 10] float32"),
    ([("image", TensorProto.DOUBLE, ["N", 3, 32, 32])], [("logits", ["N", 10])], "input image [N, 3, 32, 32] float64"),
])
def test_a_graph_that_is_not_a_classifier_is_one_error(tmp_path: Path, inputs, outputs, found) -> None:
    model = foreign_graph(tmp_path / "foreign.onnx", inputs, outputs)
    with pytest.raises(OnnxModelError, match="is not an image classifier effnet can run") as error:
        open_engine("onnxruntime", None, str(model))
    assert found in str(error.value) and "\n" not in str(error.value)


def test_predict_and_eval_refuse_a_graph_that_is_not_a_classifier(tmp_path: Path, capsys) -> None:
    """An image-to-image graph once gave predict a TypeError traceback and eval "class index 967
    out of range for 224 classes"."""
    model = foreign_graph(tmp_path / "unet.onnx", [("image", TensorProto.FLOAT, [1, 3, 224, 224])],
                          [("mask", [1, 3, 224, 224])])
    (tmp_path / "data" / "967").mkdir(parents=True)
    (tmp_path / "data" / "967" / "cat.jpg").write_bytes(CAT.read_bytes())
    for command in (["predict", str(CAT)], ["eval", str(tmp_path / "data"), "--workers", "0"]):
        assert main([*command, "--weights", str(model)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"effnet: error: {model} is not an image classifier") and err.count("\n") == 1


def test_a_graph_without_effnet_metadata_warns_what_it_guessed(tmp_path: Path, tiny_classifier) -> None:
    model = str(tiny_classifier(tmp_path / "bare.onnx", metadata=False, size=48))
    with pytest.warns(GuessedPreprocessingWarning) as warned:
        engine = open_engine("onnxruntime", None, model)
    (message,) = [str(w.message) for w in warned]
    assert message == (
        f"{model} has no effnet metadata: guessed preprocessing size 48 (the input's), crop 0.875 "
        "(resize_then_center_crop, bicubic), mean 0.485,0.456,0.406, std 0.229,0.224,0.225 and ImageNet class "
        "names; set --size, --crop-pct, --interpolation, --mean and --std if it was trained otherwise")
    assert engine.preprocessing == Preprocessing(size=48)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # files effnet wrote, and files whose preprocessing was given: no warning
        open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "m.onnx")))
        given = open_engine("onnxruntime", None, model, preprocessing={"mean": (0.5,) * 3, "std": (0.25,) * 3})
    assert given.preprocessing == Preprocessing(size=48, mean=(0.5,) * 3, std=(0.25,) * 3)


def test_the_warning_is_one_line_in_the_cli(tmp_path: Path, tiny_classifier, capsys) -> None:
    model = str(tiny_classifier(tmp_path / "bare.onnx", metadata=False))
    assert main(["predict", str(CAT), "--weights", model, "--topk", "1"]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"effnet: warning: {model} has no effnet metadata: guessed preprocessing size 32")
    assert err.count("\n") == 1
    assert main(["predict", str(CAT), "--weights", model, "--topk", "1", "--crop-pct", "1", "--mean", "0.5",
                 "--std", "0.25"]) == 0
    assert capsys.readouterr().err == ""


def test_preprocessing_the_graph_fixes_cannot_be_overridden(tmp_path: Path, tiny_classifier) -> None:
    static = str(tiny_classifier(tmp_path / "static.onnx", size=32))
    assert open_engine("onnxruntime", None, static, preprocessing={"size": 32}).preprocessing.size == 32
    with pytest.raises(UsageError, match=r"takes 32x32 inputs: it cannot run at --size 48"):
        open_engine("onnxruntime", None, static, preprocessing={"size": 48})
    images = str(tiny_classifier(tmp_path / "images.onnx", layout=INPUT_RGB))
    with pytest.raises(UsageError, match=r"preprocesses images inside the graph .*--mean"):
        open_engine("onnxruntime", None, images, preprocessing={"mean": (0.5,) * 3})


def test_torch_takes_the_same_preprocessing_overrides() -> None:
    engine = open_engine("torch", "efficientnet_lite0", "default", preprocessing={"size": 256, "interpolation": "bilinear"})
    recorded = open_engine("torch", "efficientnet_lite0", "default").preprocessing
    assert engine.preprocessing == recorded.with_size(256).with_overrides(interpolation="bilinear")
    assert engine.preprocessing.crop_fraction == pytest.approx(256 / (256 + 32))  # TF crop padding kept


@pytest.mark.parametrize("layout", [INPUT_FLOAT, INPUT_RGB])
def test_a_fixed_batch_file_takes_any_number_of_images(tmp_path: Path, tiny_classifier, layout: str,
                                                       photo_thumbnails: dict) -> None:
    """``effnet export --batch 2`` (NPU-style files fix the batch): five photos run as 2 + 2 + 1,
    the last chunk padded. Feeding them as one batch of five was onnxruntime's INVALID_ARGUMENT
    traceback in predict, eval and export --calib-dump."""
    engine = open_engine("onnxruntime", None, str(tiny_classifier(tmp_path / "m.onnx", layout=layout, batch=2)))
    photos = [np.asarray(image.convert("RGB")) for image in list(photo_thumbnails.values())[:5]]
    assert len(photos) == 5
    if layout == INPUT_FLOAT:
        batch = np.stack([engine.preprocessing(photo) for photo in photos])
        expected = tiny_classifier.logits(batch.mean(axis=(2, 3)))
    else:
        batch, expected = photos, tiny_classifier.logits(channel_means(photos))
    np.testing.assert_allclose(engine(batch), expected, rtol=1e-4, atol=1e-4)
