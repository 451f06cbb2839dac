"""`effnet export`: the ONNX file matches torch at every shape it accepts, carries its own
metadata, keeps SiLU fusable, and with in-graph preprocessing agrees with the Python path.

The reference for logits is effnet's own torch model with the same weights (itself proven
equal to the reference implementations in tests/weights/test_parity.py); the reference for
preprocessing is ``Preprocessing.__call__`` (Pillow), which the in-graph ops must reproduce.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from effnet.cli import main
from effnet.data.images import load_image
from effnet.runtime import open_backend
from effnet.runtime.onnx_backend import INPUT_BGR, INPUT_FLOAT, INPUT_RGB, read_metadata
from effnet.tasks import export as export_task
from effnet.tasks.export import ExportError, export
from effnet.weights.registry import get_weights

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
PHOTOS = sorted(EXAMPLES.glob("*.jpg"))


@pytest.fixture(scope="module")
def lite0_dynamic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0 with its real TF-trained weights (TF "same" padding), batch and size dynamic."""
    return export("efficientnet_lite0", "default", tmp_path_factory.mktemp("export") / "lite0.onnx").path


@pytest.fixture(scope="module")
def lite0_torch():
    return open_backend("torch", "efficientnet_lite0", "default", channels_last=False)


@pytest.mark.parametrize("shape", [(3, 224, 224), (1, 225, 261), (2, 97, 140)])
def test_dynamic_axes_follow_tf_same_padding(lite0_dynamic: Path, lite0_torch, shape) -> None:
    # TF "same" pads depend on the input size (225 and 261 pad differently from 224): a graph
    # with constant pads would be wrong here while right at 224
    n, h, w = shape
    x = torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(h))
    with torch.inference_mode():
        expected = lite0_torch.model(x).numpy()
    session = onnxruntime.InferenceSession(str(lite0_dynamic), providers=["CPUExecutionProvider"])
    (actual,) = session.run(None, {"input": x.numpy()})
    assert np.abs(actual - expected).max() < 1e-4


def test_file_carries_what_predict_needs(lite0_dynamic: Path, lite0_torch, capsys: pytest.CaptureFixture) -> None:
    metadata = read_metadata(lite0_dynamic)
    entry = get_weights("efficientnet_lite0.tf_in1k")
    assert (metadata["arch"], metadata["weights"], metadata["input"]) == (
        "efficientnet_lite0", entry.name, INPUT_FLOAT)
    assert (metadata["padding"], metadata["bn_eps"], metadata["num_classes"]) == ("tf_same", 1e-3, 1000)
    assert metadata["weights_sha256"] == entry.sha256
    assert metadata["preprocessing"] == json.loads(json.dumps(entry.preprocessing.to_dict()))

    # `effnet predict --backend onnx --weights model.onnx` needs nothing else and agrees with torch
    assert main(["predict", "--backend", "onnx", "--weights", str(lite0_dynamic), "--json", *map(str, PHOTOS)]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    images = [load_image(p) for p in PHOTOS]
    expected = lite0_torch(np.stack([lite0_torch.preprocessing(image) for image in images]))
    assert [r["predictions"][0]["index"] for r in results] == expected.argmax(1).tolist()


def test_silu_exports_as_plain_ops_that_onnxruntime_fuses(tmp_path: Path) -> None:
    # B0 has SiLU everywhere and squeeze-excitation; opset 18 keeps every fusion available
    path = export("efficientnet_b0", None, tmp_path / "b0.onnx", batch=1, size=64).path
    model = onnx.load(str(path))
    assert {opset.domain for opset in model.opset_import} <= {"", "ai.onnx"}
    kinds = collections.Counter(node.op_type for node in model.graph.node)
    assert kinds["Sigmoid"] > 0 and kinds["Mul"] >= kinds["Sigmoid"]
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    fused = collections.Counter(node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    # every SiLU of B0 became one op: stem, head, 2 in the first block and 3 in each of the other 15
    assert fused["QuickGelu"] == 1 + 1 + 2 + 3 * 15 == kinds["Sigmoid"] - 16
    # and the 16 squeeze-excitation gates (Conv -> Sigmoid) folded into their convolutions
    assert fused["FusedConv"] == 16 and fused["Sigmoid"] == 0


@pytest.fixture(scope="module")
def lite0_with_preprocessing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export("efficientnet_lite0", "default", tmp_path_factory.mktemp("export") / "lite0_pre.onnx",
                  with_preprocessing=True).path


def test_in_graph_preprocessing_matches_the_python_path_on_photos(lite0_with_preprocessing: Path, lite0_torch) -> None:
    backend = open_backend("onnx", None, str(lite0_with_preprocessing))
    assert backend.takes_images and read_metadata(lite0_with_preprocessing)["input"] == INPUT_RGB
    images = [load_image(p) for p in PHOTOS]
    images += [np.ascontiguousarray(images[0][::2, 1::3]), np.ascontiguousarray(images[1][:301, :457])]
    actual = backend(images)  # different sizes in one call
    expected = lite0_torch(np.stack([lite0_torch.preprocessing(image) for image in images]))
    assert actual.argmax(1).tolist() == expected.argmax(1).tolist()
    assert np.abs(actual - expected).max() < export_task.PREPROCESSING_TOLERANCE


@pytest.mark.slow
def test_bgr_graph_takes_opencv_order(tmp_path: Path, lite0_with_preprocessing: Path) -> None:
    result = export("efficientnet_lite0", "default", tmp_path / "bgr.onnx", with_preprocessing=True, bgr=True)
    assert result.metadata["input"] == INPUT_BGR
    image = load_image(PHOTOS[0])
    rgb = onnxruntime.InferenceSession(str(lite0_with_preprocessing), providers=["CPUExecutionProvider"])
    bgr = onnxruntime.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    (from_rgb,) = rgb.run(None, {"image": image[None]})
    (from_bgr,) = bgr.run(None, {"image": np.ascontiguousarray(image[None, ..., ::-1])})
    assert np.array_equal(from_rgb, from_bgr)


def test_a_failed_check_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_task, "TOLERANCE", -1.0)  # no graph can pass
    monkeypatch.setattr(export_task, "FLOAT32_SLACK", -1.0)
    with pytest.raises(ExportError, match="nothing written"):
        export("efficientnet_lite0", None, tmp_path / "out.onnx", batch=1, size=32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments, message", [
    (["--opset", "12"], "--opset must be between"),
    (["--bgr"], "--bgr only applies with --with-preprocessing"),
    (["--model", "efficientnet_b9"], "efficientnet_b9"),
    (["--name", "lite"], "--name applies with --format triton only"),
    (["--max-batch", "8"], "--max-batch applies with --format triton only"),
])
def test_bad_settings_are_one_line_usage_errors(tmp_path: Path, arguments: list[str], message: str,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "-o", str(tmp_path / "m.onnx"), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments", [["--batch", "0"], ["--size", "big"]])
def test_bad_axes_are_rejected_by_the_parser(tmp_path: Path, arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "-o", str(tmp_path / "m.onnx"), *arguments])
    assert exit_info.value.code == 2


def test_output_must_be_an_onnx_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "-o", str(tmp_path / "model.bin")]) == 2
    assert "--output should end in .onnx" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
