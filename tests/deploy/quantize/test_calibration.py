"""Calibration and evaluation images: which files, what is skipped, which labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from effnet.data.datasets import DatasetError
from effnet.data.transforms import Preprocessing
from effnet.deploy.quantize.calibration import (
    calibration_inputs, evaluation_inputs, load_evaluation, select_images,
)
from effnet.deploy.quantize.recipe import QuantizeError

METADATA = {"num_classes": 10, "labels": [f"thing{i}" for i in range(10)]}
PREPROCESSING = Preprocessing(size=32, crop_fraction=1.0, crop_mode="resize")


def test_images_are_spread_over_the_folder(tmp_path: Path, write_images) -> None:
    folder = write_images(tmp_path / "calib", 10)
    assert [path.name for path in select_images(folder, 4)] == ["img000.png", "img003.png", "img006.png",
                                                               "img009.png"]
    assert len(select_images(folder, 100)) == 10


def test_unreadable_files_are_skipped_and_listed(tmp_path: Path, write_images) -> None:
    folder = write_images(tmp_path / "calib", 3)
    (folder / "broken.jpg").write_bytes(b"not an image")
    inputs, used, failures = calibration_inputs(folder, 10, PREPROCESSING)
    assert inputs.shape == (3, 3, 32, 32) and inputs.dtype == np.float32
    assert [path.name for path in used] == ["img000.png", "img001.png", "img002.png"]
    assert len(failures) == 1 and "broken.jpg" in failures[0]
    for name in ("img000.png", "img001.png", "img002.png"):
        (folder / name).write_bytes(b"not an image either")
    with pytest.raises(QuantizeError, match="none of the 4 calibration images can be read"):
        calibration_inputs(folder, 10, PREPROCESSING)


def test_empty_or_missing_folders_say_so(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(QuantizeError, match="no images in the calibration folder"):
        select_images(tmp_path, 10)
    with pytest.raises(QuantizeError, match="calibration folder not found"):
        select_images(tmp_path / "missing", 10)


def test_evaluation_sets_give_labels_when_they_have_them(tmp_path: Path, write_images) -> None:
    flat = write_images(tmp_path / "flat", 3)
    assert load_evaluation(flat, None, METADATA).targets is None  # agreement only
    labelled = load_evaluation(flat, _labels(tmp_path, "img000.png 4\nimg002.png thing7,2\n"), METADATA)
    assert [path.name for path in labelled.paths] == ["img000.png", "img002.png"]
    assert labelled.targets == [(4,), (7, 2)]
    folders = tmp_path / "folders"
    write_images(folders / "thing3", 2)
    write_images(folders / "5", 1, seed=1)
    tree = load_evaluation(folders, None, METADATA)
    assert sorted(tree.targets) == [(3,), (3,), (5,)]
    with pytest.raises(DatasetError, match="cannot map class 'nothing'"):
        load_evaluation(flat, _labels(tmp_path, "img000.png nothing\n"), METADATA)


def test_unreadable_evaluation_images_drop_their_labels(tmp_path: Path, write_images) -> None:
    flat = write_images(tmp_path / "flat", 3)
    (flat / "img001.png").write_bytes(b"broken")
    evaluation = load_evaluation(flat, _labels(tmp_path, "img000.png 1\nimg001.png 2\nimg002.png 3\n"), METADATA)
    inputs, targets, skipped = evaluation_inputs(evaluation, PREPROCESSING)
    assert len(inputs) == 2 and targets == [(1,), (3,)] and skipped == 1


def _labels(folder: Path, text: str) -> Path:
    path = folder / "labels.txt"
    path.write_text(text)
    return path
