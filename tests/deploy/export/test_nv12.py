"""NV12 input: the numpy reference conversions, the graph's resize matrices against Pillow,
and the whole graph against torch on real photos (same RGB frame, NV12 made in numpy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from effnet.data.images import load_image
from effnet.data.nv12 import fit_frame, nv12_to_rgb, rgb_to_nv12
from effnet.data.transforms import Preprocessing
from effnet.deploy.export.nv12_graph import crop_matrices, nv12_graph, parse_frame_size
from effnet.deploy.export.onnx import TOP1_TIE, export, export_network
from effnet.errors import UsageError
from effnet.models.network import build_model
from effnet.runtime.onnx_metadata import INPUT_NV12, read_metadata
from effnet.runtime.onnxruntime_engine import open_session
from effnet.runtime.predictor import Predictor

#: Measured on the six photo thumbnails and the four acceptance photos (Lite0, 240x320 frames,
#: opset 11): largest max |graph - torch| 0.51 logits (chroma subsampling plus float vs Pillow's
#: uint8 resize); the export's own check allows 1.0.
NV12_TOLERANCE = 1.0


@pytest.mark.parametrize("colour_range, rgb, yuv", [
    # ITU-R BT.601 colour bar values (video range) and their full-range counterparts
    ("video", (255, 255, 255), (235, 128, 128)), ("video", (0, 0, 0), (16, 128, 128)),
    ("video", (255, 0, 0), (81, 90, 240)), ("video", (0, 255, 0), (145, 54, 34)),
    ("video", (0, 0, 255), (41, 240, 110)), ("full", (255, 255, 255), (255, 128, 128)),
    ("full", (255, 0, 0), (76, 85, 255)),
])
def test_rgb_to_nv12_gives_bt601_values(colour_range: str, rgb: tuple, yuv: tuple) -> None:
    frame = rgb_to_nv12(np.full((4, 6, 3), rgb, np.uint8), colour_range)
    assert frame.shape == (6, 6)
    assert (frame[:4] == yuv[0]).all() and (frame[4:, 0::2] == yuv[1]).all() and (frame[4:, 1::2] == yuv[2]).all()
    assert np.abs(nv12_to_rgb(frame, colour_range).astype(int) - rgb).max() <= 1


def test_nv12_round_trip_on_a_photo_loses_only_chroma_detail(acceptance_photos: dict) -> None:
    photo = acceptance_photos["chelsea"][:300, :450]
    back = nv12_to_rgb(rgb_to_nv12(photo)).astype(int)
    luma = (back - photo) @ np.array([0.299, 0.587, 0.114])
    assert np.abs(luma).mean() < 0.5 and np.abs(back - photo).mean() < 1.5


@pytest.mark.parametrize("recipe", [
    Preprocessing(), Preprocessing(crop_mode="center_crop_then_resize", crop_fraction=224 / 256),
    Preprocessing(crop_mode="resize", interpolation="bilinear"),
])
def test_resize_matrices_reproduce_pillow(acceptance_photos: dict, recipe: Preprocessing) -> None:
    photo = acceptance_photos["coffee"][:300, :450]
    rows, columns = crop_matrices(recipe, 300, 450)
    # Pillow resizes columns first, then rows, and clips to 0-255 after each pass (bicubic overshoots)
    columns_done = np.clip(np.einsum("hwc,tw->htc", photo.astype(np.float64), columns, optimize=True), 0, 255)
    ours = np.clip(np.einsum("sh,htc->stc", rows, columns_done, optimize=True), 0, 255)
    pillow = recipe.resize_crop(photo).astype(np.float64)  # uint8 filter: also rounds after each pass
    assert np.abs(ours - pillow).max() < 2.0 and np.abs(ours - pillow).mean() < 0.4


@pytest.mark.parametrize("opset", [11, 13, 18, 23])
def test_graph_uses_only_old_ops_and_matches_python_preprocessing(acceptance_photos: dict, opset: int) -> None:
    recipe = Preprocessing(size=64)
    model = nv12_graph(recipe, 96, 128, "video", opset)
    assert {node.op_type for node in model.graph.node} <= {
        "Cast", "Slice", "Reshape", "Transpose", "ConvTranspose", "Concat", "Conv", "Clip", "MatMul", "Mul", "Sub"}
    frame = rgb_to_nv12(fit_frame(acceptance_photos["china"], 96, 128))
    (graph_input,) = open_session(model.SerializeToString()).run(None, {"image": frame[None]})
    expected = recipe(nv12_to_rgb(frame))  # the same frame decoded in numpy, then effnet's preprocessing
    assert graph_input.shape == (1, 3, 64, 64) and np.abs(graph_input[0] - expected).max() < 0.1


@pytest.mark.parametrize("text, expected", [("480x640", (480, 640)), ("224", (224, 224)), ("2X4", (2, 4))])
def test_frame_sizes_parse(text: str, expected: tuple) -> None:
    assert parse_frame_size(text) == expected


@pytest.mark.parametrize("text, message", [("480x641", "even frame sides"), ("480x", "HEIGHTxWIDTH"),
                                           ("0x4", "HEIGHTxWIDTH")])
def test_bad_frame_sizes_are_one_line_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_frame_size(text)


def test_tiny_net_at_opset_11_checks_nv12_before_writing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_model("efficientnet_b0", padding="tf_same", width_mult=0.25, depth_mult=0.25, num_classes=5).eval()
    result = export_network(net, tmp_path / "nv12.onnx", batch=1, size=64, opset=11, nv12=(48, 64),
                            nv12_range="full")
    assert [check["what"] for check in result.checks] == ["network", "nv12 input", "nv12 input"]
    model = onnx.load(str(result.path))
    assert model.opset_import[0].version == 11
    assert not {"Shape", "Pad", "Resize"} & {node.op_type for node in model.graph.node}
    metadata = read_metadata(result.path)
    assert (metadata["input"], metadata["nv12"]) == (INPUT_NV12, {"height": 48, "width": 64, "range": "full"})
    assert open_session(result.path).get_inputs()[0].shape == [1, 72, 64]


@pytest.fixture(scope="module")
def lite0_nv12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Lite0 weights, NV12 frames of 240x320 (a QVGA camera), opset 11, batch 1."""
    return export("efficientnet_lite0", "default", tmp_path_factory.mktemp("nv12") / "lite0_nv12.onnx",
                  opset=11, batch=1, nv12=(240, 320)).path


def test_real_photos_through_nv12_agree_with_torch(lite0_nv12: Path, lite0_torch, photo_thumbnails: dict,
                                                   acceptance_photos: dict) -> None:
    photos = {name: np.asarray(image) for name, image in photo_thumbnails.items()}
    photos.update({f"full_{name}": image if image.ndim == 3 else np.stack([image] * 3, -1)
                   for name, image in acceptance_photos.items()})
    session = open_session(lite0_nv12)
    differences, agree = [], []
    for photo in photos.values():
        frame = fit_frame(photo, 240, 320)
        expected = lite0_torch(lite0_torch.preprocessing(frame)[None])[0]  # torch on the same RGB frame
        (actual,) = session.run(None, {"image": rgb_to_nv12(frame)[None]})[0]
        differences.append(float(np.abs(actual - expected).max()))
        agree.append("same" if actual.argmax() == expected.argmax() else
                     "tie" if expected[actual.argmax()] >= expected.max() - TOP1_TIE else "different")
    # chelsea framed at 240x320 is a tie in torch itself: tiger cat 0.004 logits above Egyptian cat
    # (measured), below the chroma subsampling's effect; every decisive photo keeps its top-1
    assert "different" not in agree and agree.count("tie") <= 1, agree
    assert max(differences) < NV12_TOLERANCE


def test_predict_runs_an_nv12_file_from_photo_files(lite0_nv12: Path, lite0_torch, example_photos: list) -> None:
    predictor = Predictor(weights=str(lite0_nv12))
    assert predictor.engine.input_layout == INPUT_NV12
    results = predictor([str(path) for path in example_photos])  # 2 photos, a batch-1 file: run one by one
    frames = [fit_frame(load_image(path), 240, 320) for path in example_photos]
    expected = lite0_torch(np.stack([lite0_torch.preprocessing(frame) for frame in frames]))
    assert [r[0].index for r in results] == expected.argmax(1).tolist()
