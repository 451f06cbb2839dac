"""The calibration hand-off: picks cover every class, each file holds exactly the exported
file's input (or the pixels before normalization) in the form asked, and bad folders are one
line. The reference for values is effnet's Python preprocessing of the same image."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from effnet.data.images import load_image
from effnet.data.transforms import Preprocessing
from effnet.deploy.export.calibration_dump import dump_calibration, pick_covering
from effnet.errors import UsageError
from effnet.runtime.onnxruntime_engine import OnnxRuntimeEngine


@pytest.fixture
def tiny_file(tmp_path: Path, tiny_graph: Callable[..., onnx.ModelProto]) -> Path:
    """The deploy tests' tiny float32 classifier (32x32 input, 10 classes) as a file."""
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_graph(11), path)
    return path


def test_picks_cover_every_class_before_repeating_one() -> None:
    groups = {"a": [Path(f"a{i}") for i in range(5)], "b": [Path("b0")], "c": [Path("c0"), Path("c1")]}
    picks = pick_covering(groups, 5)
    assert [key for key, _ in picks] == ["a", "b", "c", "a", "c"]
    assert [str(path) for _, path in picks if _ == "a"] == ["a0", "a2"]  # spread over the class
    assert len(pick_covering(groups, 100)) == 8 and len(pick_covering(groups, 2)) == 2


def test_class_folders_each_get_an_image(tiny_file: Path, photo_tree, tmp_path: Path) -> None:
    dump = dump_calibration(tiny_file, photo_tree.root, tmp_path / "calib", count=4)
    assert (dump.grouping, dump.classes, dump.covered, len(dump.files)) == ("sub-folder", 6, 4, 4)
    folder = tmp_path / "calib"
    assert (folder / "list.txt").read_text().splitlines() == dump.files
    manifest = json.loads((folder / "manifest.json").read_text())
    assert len({image["class"] for image in manifest["images"]}) == 4
    recipe = Preprocessing.from_dict(manifest["preprocessing"])
    for image in manifest["images"]:
        tensor = np.load(folder / image["file"])
        assert tensor.shape == (1, 3, 32, 32) and tensor.dtype == np.float32
        np.testing.assert_array_equal(tensor[0], recipe(load_image(photo_tree.root / image["source"])))


def test_a_flat_folder_is_grouped_by_the_models_top1(tiny_file: Path, write_images, tmp_path: Path) -> None:
    images = write_images(tmp_path / "flat", 12)
    engine = OnnxRuntimeEngine.load(None, str(tiny_file))
    paths = sorted(images.iterdir())
    logits = engine(np.stack([engine.preprocessing(load_image(path)) for path in paths]))
    classes = {engine.labels[i] for i in logits.argmax(1)}
    dump = dump_calibration(tiny_file, images, tmp_path / "calib", count=len(classes))
    assert dump.grouping == "model top-1" and dump.classes == dump.covered == len(classes)
    manifest = json.loads((tmp_path / "calib" / "manifest.json").read_text())
    assert {image["class"] for image in manifest["images"]} == classes


@pytest.mark.parametrize("layout, dtype, shape", [("nhwc", "uint8", (32, 32, 3)), (None, "float32", (3, 32, 32))])
def test_raw_pixels_for_compilers_that_normalize_inside(tiny_file: Path, photo_tree, tmp_path: Path,
                                                        layout: str | None, dtype: str, shape: tuple) -> None:
    dump = dump_calibration(tiny_file, photo_tree.root, tmp_path / "calib", count=2, file_format="bin",
                            values="pixels", layout=layout, dtype=dtype)
    manifest = json.loads((tmp_path / "calib" / "manifest.json").read_text())
    recipe = Preprocessing.from_dict(manifest["preprocessing"])
    first = manifest["images"][0]
    raw = np.fromfile(tmp_path / "calib" / first["file"], dtype=dtype).reshape(shape)
    crop = recipe.resize_crop(load_image(photo_tree.root / first["source"]))
    np.testing.assert_array_equal(raw, crop if layout == "nhwc" else crop.transpose(2, 0, 1))
    assert dump.shape == [1, *shape]
    # the ImageNet normalization as RDK X5's EfficientNet yaml writes it (mean_value, scale_value)
    assert manifest["mean_255"] == [123.675, 116.28, 103.53]
    assert manifest["scale_255"] == [0.01712475, 0.017507, 0.01742919]


def test_image_copies_for_compilers_that_preprocess_themselves(tiny_file: Path, photo_tree, tmp_path: Path) -> None:
    dump = dump_calibration(tiny_file, photo_tree.root, tmp_path / "calib", count=6, file_format="image")
    manifest = json.loads((tmp_path / "calib" / "manifest.json").read_text())
    assert dump.covered == 6
    for image in manifest["images"]:
        assert (tmp_path / "calib" / image["file"]).read_bytes() == (photo_tree.root / image["source"]).read_bytes()


def test_an_earlier_dump_is_replaced_and_a_foreign_folder_refused(tiny_file: Path, photo_tree, tmp_path: Path) -> None:
    dump_calibration(tiny_file, photo_tree.root, tmp_path / "calib", count=6)
    again = dump_calibration(tiny_file, photo_tree.root, tmp_path / "calib", count=2)
    assert again.replaced and len(list((tmp_path / "calib" / "data").iterdir())) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="holds no earlier calibration dump"):
        dump_calibration(tiny_file, photo_tree.root, tmp_path / "mine", count=2)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]


def test_a_folder_without_readable_images_is_one_line(tiny_file: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images in the calibration folder"):
        dump_calibration(tiny_file, tmp_path / "empty", tmp_path / "calib")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UsageError, match="none of the 1 calibration images can be read"):
        dump_calibration(tiny_file, tmp_path / "broken", tmp_path / "calib")
    assert not (tmp_path / "calib").exists()
