"""``effnet export --format tflite``: fp32 equal to torch, int8 with uint8 input like Google's
EfficientNet-Lite files (full-integer on request), its recipe closer to fp32 than the quantizer
as it comes, preprocessing and labels in the file, bad input refused.

The references: effnet's torch Lite0 with the same embedded weights, on real photos
(scikit-image, scikit-learn, matplotlib and the repo's examples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

from ai_edge_litert.interpreter import Interpreter  # noqa: E402

from effnet.deploy.export.tflite import export_tflite, run_file  # noqa: E402
from effnet.deploy.quantize.recipe import QuantizeError  # noqa: E402
from effnet.errors import UsageError  # noqa: E402
from effnet.runtime import open_engine  # noqa: E402
from effnet.runtime.tflite_metadata import INPUT_FLOAT_NHWC, INPUT_UINT8_NHWC, read_metadata  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "images"


@pytest.fixture(scope="module")
def calibration_folder(tmp_path_factory: pytest.TempPathFactory, photo_thumbnails: dict[str, Image.Image]) -> Path:
    """The six real thumbnails, their mirror images and the two example photos."""
    folder = tmp_path_factory.mktemp("calib")
    for name, image in photo_thumbnails.items():
        image.save(folder / f"{name}.png")
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / f"{name}_mirrored.png")
    for path in EXAMPLES.glob("*.jpg"):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


@pytest.fixture(scope="module")
def lite0_int8(tmp_path_factory: pytest.TempPathFactory, calibration_folder: Path):
    return export_tflite("efficientnet_lite0", "default", tmp_path_factory.mktemp("int8") / "lite0_int8.tflite",
                         int8=True, calibration=calibration_folder)


def _torch_and_file(path: Path, photos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    reference = open_engine("torch", "efficientnet_lite0", "default", channels_last=False)
    engine = open_engine("litert", None, str(path), threads=2)
    images = [photo if photo.ndim == 3 else np.stack([photo] * 3, -1) for photo in photos.values()]
    expected = reference(np.stack([reference.preprocessing(image) for image in images]))
    actual = engine(np.stack([engine.preprocessing(image) for image in images]))
    return np.asarray(expected), actual


def test_fp32_file_gives_torch_answers_on_real_photos(lite0_tflite: Path, acceptance_photos) -> None:
    expected, actual = _torch_and_file(lite0_tflite, acceptance_photos)
    assert (actual.argmax(1) == expected.argmax(1)).all()
    assert np.abs(actual - expected).max() < 1e-3


def test_fp32_file_carries_preprocessing_labels_and_layout(lite0_tflite: Path) -> None:
    metadata = read_metadata(lite0_tflite)
    assert metadata["arch"] == "efficientnet_lite0"
    assert metadata["input"] == INPUT_FLOAT_NHWC and metadata["precision"] == "fp32"
    assert metadata["preprocessing"]["size"] == 224 and metadata["preprocessing"]["interpolation"] == "bicubic"
    interpreter = Interpreter(model_path=str(lite0_tflite))
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert list(source["shape"]) == [1, 224, 224, 3] and source["dtype"] == np.float32
    assert list(target["shape"]) == [1, 1000] and target["dtype"] == np.float32


def test_int8_file_takes_uint8_pixels_and_returns_float_logits(lite0_int8) -> None:
    """As Google's int8 EfficientNet-Lite: uint8 input whose quantization is the pixel itself."""
    interpreter = Interpreter(model_path=str(lite0_int8.path))
    (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert source["dtype"] == np.uint8 and source["quantization"] == (1.0, 0)
    assert target["dtype"] == np.float32
    ops = {op["op_name"] for op in interpreter._get_ops_details()}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D"} <= ops
    weights = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8 and len(t["shape"]) == 4]
    assert weights, "no int8 convolution weights: the file is not integer"
    assert read_metadata(lite0_int8.path)["input"] == INPUT_UINT8_NHWC
    assert lite0_int8.calibration_images == 14 and lite0_int8.agreement is not None


def _float_weights(path: Path) -> list[tuple[int, ...]]:
    """Shapes of the float32 weights of the file's convolutions."""
    interpreter = Interpreter(model_path=str(path))
    tensors = {tensor["index"]: tensor for tensor in interpreter.get_tensor_details()}
    return [tuple(tensors[op["inputs"][1]]["shape"]) for op in interpreter._get_ops_details()
            if op["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D") and tensors[op["inputs"][1]]["dtype"] == np.float32]


def test_int8_keeps_the_stem_and_first_conv_float_unless_asked_full_integer(
        lite0_int8, tmp_path: Path, calibration_folder: Path) -> None:
    """Default: the stem (32x3x3x3, OHWI) and block 0's depthwise conv (1x3x3x32) stay float,
    every later layer is int8; ``float_layers=0``: no float convolution is left."""
    quantization = read_metadata(lite0_int8.path)["quantization"]
    assert quantization["float_layers"] == 2 and quantization["bias_correction"] is True
    assert sorted(_float_weights(lite0_int8.path)) == [(1, 3, 3, 32), (32, 3, 3, 3)]
    full = export_tflite("efficientnet_lite0", "default", tmp_path / "full.tflite", int8=True,
                         calibration=calibration_folder, num_images=6, float_layers=0)
    assert read_metadata(full.path)["quantization"]["float_layers"] == 0
    assert _float_weights(full.path) == []
    ops = [op["op_name"] for op in Interpreter(model_path=str(full.path))._get_ops_details()]
    assert ops.count("DEQUANTIZE") == 1 and ops[-1] == "DEQUANTIZE"  # only the logits leave int8


def test_int8_agrees_with_fp32_on_real_photos(lite0_int8, acceptance_photos) -> None:
    """chelsea, coffee, camera and china: int8 keeps torch's top-1 on at least three of four,
    and the cat stays a cat (281 tabby / 282 tiger cat / 285 Egyptian cat)."""
    expected, actual = _torch_and_file(lite0_int8.path, acceptance_photos)
    assert (actual.argmax(1) == expected.argmax(1)).sum() >= 3
    assert actual[0].argmax() in (281, 282, 285)


def test_float_input_int8_file_takes_the_fp32_input(tmp_path: Path, calibration_folder: Path) -> None:
    result = export_tflite("efficientnet_lite0", "default", tmp_path / "float_in.tflite", int8=True,
                           calibration=calibration_folder, num_images=6, int8_input="float")
    interpreter = Interpreter(model_path=str(result.path))
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert read_metadata(result.path)["input"] == INPUT_FLOAT_NHWC
    logits = run_file(result.path, np.zeros((1, 224, 224, 3), np.float32))
    assert logits.shape == (1, 1000) and np.isfinite(logits).all()


def test_bad_settings_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--calib"):
        export_tflite("efficientnet_lite0", "default", tmp_path / "a.tflite", int8=True)
    with pytest.raises(UsageError, match="--int8 only"):
        export_tflite("efficientnet_lite0", "default", tmp_path / "a.tflite", calibration=tmp_path)
    with pytest.raises(UsageError, match="--int8-float-layers"):
        export_tflite("efficientnet_lite0", "default", tmp_path / "a.tflite", int8=True, calibration=tmp_path,
                      float_layers=-1)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(QuantizeError, match="can be read"):
        export_tflite("efficientnet_lite0", "default", tmp_path / "a.tflite", int8=True, calibration=empty)
    assert not (tmp_path / "a.tflite").exists()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["efficientnet_b0", "efficientnet_lite4", "efficientnetv2_b0"])
def test_every_family_exports_fp32(tmp_path: Path, model: str) -> None:
    """Random weights (the check compares with the same module): V1 SiLU+SE, Lite, V2 fused."""
    result = export_tflite(model, None, tmp_path / f"{model}.tflite")
    assert result.checks[0]["same_top1"] and result.checks[0]["max_abs_diff"] <= result.checks[0]["tolerance"]
