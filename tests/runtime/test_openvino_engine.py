"""The OpenVINO engine on Lite0 exported by effnet: torch's answers in fp32, measured agreement
in bf16 and int8, and one-line refusals for what it cannot honour.

Tolerances and floors, and where they come from (2-core AVX512-VNNI/BF16 EPYC, OpenVINO
2026.4.1, NNCF 3.4.0):
- fp32 vs torch: the largest logit difference on real photos was 9.5e-6 (logits span about
  20); 1e-4 leaves room for other CPUs' kernel orders, and is far below any class flip.
- bf16 vs fp32: 95.8% top-1 agreement on 96 crops of scikit-image/scikit-learn photos
  (benchmarks/onnx_photos.py); on the ten whole photos here at most one may flip.
- int8 vs fp32: 89.6-91.7% on the same 96 crops; calibrated here on six thumbnails only, at
  most two of the ten photos may flip (a broken quantization flips most of them).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from effnet.cli import main  # noqa: E402
from effnet.errors import UsageError  # noqa: E402
from effnet.runtime import open_engine, resolve_engine  # noqa: E402
from effnet.runtime.onnx_metadata import INPUT_RGB  # noqa: E402
from effnet.runtime.openvino_engine import OpenVinoModelError, native_bf16  # noqa: E402

CAT = Path(__file__).resolve().parents[2] / "examples" / "images" / "cat.jpg"


@pytest.fixture(scope="module")
def lite0_onnx(tmp_path_factory: pytest.TempPathFactory, lite0_predictor) -> Path:
    from effnet.deploy.export.onnx import export_network

    folder = tmp_path_factory.mktemp("openvino")
    return export_network(lite0_predictor.engine.model, folder / "lite0.onnx", batch=None, size=224).path


@pytest.fixture(scope="module")
def photo_batch(acceptance_photos, photo_thumbnails, lite0_predictor) -> np.ndarray:
    """Ten real photos (four full-size, six thumbnails) as Lite0's input."""
    images = [*acceptance_photos.values(), *(np.asarray(image) for image in photo_thumbnails.values())]
    return np.stack([lite0_predictor.preprocess(image) for image in images])


@pytest.fixture(scope="module")
def torch_logits(photo_batch: np.ndarray, lite0_predictor) -> np.ndarray:
    return lite0_predictor.engine(photo_batch)


def test_fp32_gives_torchs_answers(lite0_onnx: Path, photo_batch: np.ndarray, torch_logits: np.ndarray) -> None:
    engine = open_engine("openvino", None, str(lite0_onnx), threads=1)
    assert (engine.name, engine.arch, engine.precision) == ("openvino", "efficientnet_lite0", "fp32")
    assert engine.weights_name == "efficientnet_lite0.tf_in1k" and engine.preprocessing.size == 224
    assert engine.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"  # never bf16 silently
    np.testing.assert_allclose(engine(photo_batch), torch_logits, atol=1e-4, rtol=0)


def test_a_pinned_batch_splits_and_pads_other_sizes(lite0_onnx: Path, photo_batch: np.ndarray,
                                                    torch_logits: np.ndarray) -> None:
    engine = open_engine("openvino", None, str(lite0_onnx), threads=1, batch=4)
    np.testing.assert_allclose(engine(photo_batch), torch_logits, atol=1e-4, rtol=0)  # 10 = 4 + 4 + 2 padded


def test_bf16_agrees_with_fp32_or_is_refused_where_not_native(lite0_onnx: Path, photo_batch: np.ndarray,
                                                              torch_logits: np.ndarray) -> None:
    import openvino as ov

    if not native_bf16(ov.Core()):
        with pytest.raises(UsageError, match="no native bf16"):
            open_engine("openvino", None, str(lite0_onnx), precision="bf16")
        return
    engine = open_engine("openvino", None, str(lite0_onnx), threads=1, precision="bf16")
    assert engine.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
    logits = engine(photo_batch)
    assert np.abs(logits - torch_logits).max() > 1e-3  # it really computed in bf16
    assert (logits.argmax(1) == torch_logits.argmax(1)).sum() >= 9


def test_int8_ir_from_nncf_agrees_with_fp32_and_carries_the_metadata(
        lite0_onnx: Path, photo_batch: np.ndarray, torch_logits: np.ndarray, photo_tree) -> None:
    pytest.importorskip("nncf")
    from effnet.deploy.quantize.openvino import quantize_openvino

    output = quantize_openvino(lite0_onnx, photo_tree.root, lite0_onnx.with_name("lite0.int8.xml"))
    assert output.with_suffix(".bin").is_file()
    assert resolve_engine("auto", str(output)) == "openvino"
    engine = open_engine("auto", None, str(output), threads=1)
    assert (engine.precision, engine.arch, engine.preprocessing.size) == ("int8", "efficientnet_lite0", 224)
    assert engine.metadata["quantization"]["calibration_images"] == 6
    assert (engine(photo_batch).argmax(1) == torch_logits.argmax(1)).sum() >= 8
    with pytest.raises(UsageError, match="is quantized to int8: --precision fp32 needs a float file"):
        open_engine("openvino", None, str(output), precision="fp32")


def test_precision_refusals_name_what_to_do(lite0_onnx: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UsageError, match="effnet quantize model.onnx --engine openvino --calib DIR"):
        open_engine("openvino", None, str(lite0_onnx), precision="int8")
    assert main(["predict", "--engine", "onnxruntime", "--weights", str(lite0_onnx), "--precision", "bf16",
                 str(CAT)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == ("effnet: error: --precision bf16: the onnxruntime engine offers fp32; bf16 is offered by "
                     "--engine torch, openvino")
    with pytest.raises(UsageError, match="the torch engine offers fp32, bf16; int8 is offered by --engine openvino"):
        open_engine("torch", "efficientnet_lite0", precision="int8")


def test_files_it_cannot_run_are_one_line(tmp_path: Path, tiny_classifier) -> None:
    with pytest.raises(UsageError, match="--engine onnxruntime"):
        open_engine("openvino", None, str(tiny_classifier(tmp_path / "rgb.onnx", layout=INPUT_RGB)))
    with pytest.raises(UsageError, match="runs on the CPU"):
        open_engine("openvino", None, str(tiny_classifier(tmp_path / "m.onnx")), device="cuda")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(OpenVinoModelError, match="OpenVINO cannot read this model"):
        open_engine("openvino", None, str(tmp_path / "broken.onnx"))


def test_a_tiny_graph_reads_its_metadata_like_onnxruntime(tmp_path: Path, tiny_classifier) -> None:
    path = str(tiny_classifier(tmp_path / "m.onnx"))
    openvino, onnxruntime = open_engine("openvino", None, path), open_engine("onnxruntime", None, path)
    assert (openvino.arch, openvino.preprocessing, openvino.labels, openvino.weights_name) == (
        onnxruntime.arch, onnxruntime.preprocessing, onnxruntime.labels, onnxruntime.weights_name)
    batch = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    np.testing.assert_allclose(openvino(batch), onnxruntime(batch), atol=1e-5)


def test_missing_package_is_one_line_saying_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert main(["predict", "--engine", "openvino", "--weights", str(tmp_path / "m.xml"), str(CAT)]) == 2
    assert capsys.readouterr().err.strip() == ("effnet: error: engine 'openvino' is not available: openvino not "
                                               "installed (pip install 'effnet[openvino]')")
