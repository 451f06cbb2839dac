"""``effnet eval``: layouts, accepted labels, skipped images, limit, JSON, and exact agreement with
a direct top-k computation by the torch model, in one process and across two gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.cli import main
from effnet.data.datasets import Failed, LabelResolver
from effnet.data.images import load_image
from effnet.runtime import open_backend
from effnet.data.transforms import Preprocessing
from effnet.tasks.evaluate import (
    ShardOutput,
    collate,
    load_eval_set,
    predict_shard,
    score,
    split_preprocessing,
    spread,
)

SRC = Path(__file__).resolve().parents[2] / "src"

#: real photos shipped in installed packages, shrunk so decoding stays cheap
PHOTOS = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    loaded = {}
    for name, (package, relative) in PHOTOS.items():
        with resources.as_file(resources.files(package).joinpath(relative)) as path:
            image = Image.open(path).convert("RGB")
        image.thumbnail((320, 320))
        loaded[name] = image
    return loaded


@pytest.fixture(scope="module")
def backend():
    return open_backend("torch", "efficientnet_lite0", "default")


def _folder_tree(root: Path, photos) -> Path:
    """Class folders in every naming style; flower is filed under tench (0) so it must miss."""
    layout = {"281": "chelsea", "0967": "coffee", "n03773504": "rocket", "652": "hopper",
              "698": "china", "0": "flower"}
    for folder, name in layout.items():
        (root / folder).mkdir(parents=True)
        photos[name].save(root / folder / f"{name}.{'png' if name == 'chelsea' else 'jpg'}")
    return root


def _direct_top5(backend, paths: list[Path]) -> list[list[int]]:
    """The reference: the torch module itself, on the same decoded, preprocessed images."""
    batch = torch.from_numpy(np.stack([backend.preprocessing(load_image(p)) for p in paths]))
    with torch.inference_mode():
        logits = backend.model(batch)
    return torch.topk(logits, 5, dim=1).indices.tolist()


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["eval", *map(str, args), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_tree_numbers_match_direct_torch_topk(tmp_path, photos, backend, capsys):
    root = _folder_tree(tmp_path / "data", photos)
    code, out, _ = _run([root, "--json", tmp_path / "r.json", "--workers", "0", "--batch-size", "4"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())

    paths = sorted(root.glob("*/*"))  # class folders sort as strings: 0, 0967, 281, 652, 698, n03773504
    targets = [0, 967, 281, 652, 698, 657]
    top5 = _direct_top5(backend, paths)
    assert [p["file"] for p in result["predictions"]] == [str(p.relative_to(root)) for p in paths]
    assert [p["target"] for p in result["predictions"]] == [[t] for t in targets]
    assert [p["top5"] for p in result["predictions"]] == top5
    top1 = np.mean([t == row[0] for t, row in zip(targets, top5)])
    top5_rate = np.mean([t in row for t, row in zip(targets, top5)])
    assert 0 < top1 < top5_rate < 1  # the set has hits and misses, so the check means something
    assert result["Top_1_Accuracy"] == pytest.approx(top1)
    assert result["Top_5_Accuracy"] == pytest.approx(top5_rate)
    assert result["images"] == result["evaluated"] == 6 and result["skipped"] == 0
    assert f"Top_1: {top1:.5f}" in out and "Top_5_Accuracy" in out and "skipped  0" in out


def test_label_file_accepts_any_listed_class(tmp_path, photos, backend):
    for name in ("chelsea", "hopper", "coffee"):
        photos[name].save(tmp_path / f"{name}.jpg")
    (tmp_path / "val.txt").write_text("chelsea.jpg 281\nhopper.jpg 652\ncoffee.jpg n07920052\n")
    (tmp_path / "val-any.txt").write_text("chelsea.jpg 281,282,285\nhopper.jpg 652,400\ncoffee.jpg 967,968\n")
    top5 = _direct_top5(backend, [tmp_path / f"{n}.jpg" for n in ("chelsea", "hopper", "coffee")])
    resolver = LabelResolver()
    results = {}
    for labels in ("val.txt", "val-any.txt"):
        eval_set = load_eval_set(tmp_path, resolver, labels=tmp_path / labels)
        output = predict_shard(backend, eval_set, range(len(eval_set)), batch_size=2)
        assert output.topk == top5
        results[labels] = score(eval_set, output, backend.labels)
        expected = np.mean([row[0] in accepted for row, accepted in zip(top5, eval_set.targets)])
        assert results[labels].top1 == pytest.approx(expected)
    # more accepted classes can only add hits; per-class accuracy is grouped by the first label
    assert results["val-any.txt"].top1 >= results["val.txt"].top1
    assert [c.index for c in results["val-any.txt"].per_class] == [281, 652, 967]


def test_corrupt_images_are_counted_listed_and_skipped(tmp_path, photos, capsys):
    root = tmp_path / "data"
    (root / "281").mkdir(parents=True)
    photos["chelsea"].save(root / "281" / "chelsea.jpg")
    (root / "281" / "empty.jpg").write_bytes(b"")
    (root / "281" / "text.png").write_text("not an image")
    whole = (root / "281" / "chelsea.jpg").read_bytes()
    (root / "281" / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    code, out, _ = _run([root, "--workers", "2", "--batch-size", "2", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["images"], result["evaluated"], result["skipped"]) == (4, 1, 3)
    assert {f["file"] for f in result["failed"]} == {"281/empty.jpg", "281/text.png", "281/cut.jpg"}
    assert "skipped  3 unreadable image(s)" in out and "281/cut.jpg: " in out


def test_nothing_readable_is_an_error(tmp_path, capsys):
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "a.jpg").write_bytes(b"junk")
    code, _, err = _run([tmp_path, "--workers", "0"], capsys)
    assert code == 1 and "no image could be evaluated (1 unreadable)" in err


def test_limit_spreads_over_the_set_and_per_class(tmp_path, photos, capsys):
    root = _folder_tree(tmp_path / "data", photos)
    code, out, _ = _run([root, "--limit", "3", "--per-class", "--workers", "0", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert spread(6, 3) == [0, 2, 4]
    assert [p["file"] for p in result["predictions"]] == ["0/flower.jpg", "281/chelsea.png", "698/china.jpg"]
    assert [c["index"] for c in result["per_class"]] == [0, 281, 698]
    assert "  281  tabby cat" in out


def test_class_map_and_usage_errors(tmp_path, photos, capsys):
    (tmp_path / "data" / "kitty").mkdir(parents=True)
    photos["chelsea"].save(tmp_path / "data" / "kitty" / "c.jpg")
    (tmp_path / "map.txt").write_text("kitty 281\n")
    code, _, _ = _run([tmp_path / "data", "--class-map", tmp_path / "map.txt", "--workers", "0",
                       "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["predictions"][0]["target"] == [281]
    code, _, err = _run([tmp_path / "data", "--workers", "0"], capsys)
    assert code == 1 and "kitty: cannot map class 'kitty'" in err and "--class-map" in err
    code, _, err = _run([tmp_path / "data", "--batch-size", "0"], capsys)
    assert code == 2 and "--batch-size must be at least 1" in err


def test_fine_tuned_model_folders_named_by_its_classes(tmp_path, photos, capsys):
    from effnet.weights.convert import write_safetensors
    from effnet.weights.loading import create_model

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=3)
    names = ["cat", "cup", "rocket"]
    write_safetensors(model.state_dict(), tmp_path / "ft.safetensors",
                      {"arch": "efficientnet_lite0", "labels": names, "num_classes": 3})
    for folder, photo in zip(names, ("chelsea", "coffee", "rocket")):
        (tmp_path / "data" / folder).mkdir(parents=True)
        photos[photo].save(tmp_path / "data" / folder / "x.jpg")
    code, out, _ = _run([tmp_path / "data", "--weights", tmp_path / "ft.safetensors", "--workers", "0",
                         "--per-class", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert [p["target"] for p in result["predictions"]] == [[0], [1], [2]]
    assert all(len(p["top3"]) == 3 for p in result["predictions"])  # top-k capped at the class count
    assert result["Top_3_Accuracy"] == 1.0 and "cup" in out


def test_collate_sets_failures_aside():
    image = np.zeros((3, 4, 4), np.float32)
    images, positions, failed = collate([(image, 0), (Failed("b.jpg", "empty file (0 bytes)"), 1), (image + 1, 2)])
    assert isinstance(images, torch.Tensor) and images.shape == (2, 3, 4, 4) and images[1].eq(1).all()
    assert positions == [0, 2] and failed == [(1, "empty file (0 bytes)")]
    assert collate([(Failed("a", "x"), 7)]) == (None, [], [(7, "x")])
    raw = [np.zeros((5, 6, 3), np.uint8), np.zeros((7, 6, 3), np.uint8)]  # for graphs that preprocess
    assert isinstance(collate([(raw[0], 0), (raw[1], 1)])[0], list)


@pytest.mark.parametrize("mean, std", [((127 / 255,) * 3, (128 / 255,) * 3), ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
def test_split_preprocessing_is_bit_identical_to_the_whole(mean, std):
    # the workers crop, the main process normalizes the batch in torch: same float32 arithmetic
    preprocessing = Preprocessing(size=32, crop_fraction=32 / 40, crop_mode="center_crop_then_resize", mean=mean, std=std)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((50, 70), (64, 40), (33, 33))]
    per_image, per_batch = split_preprocessing(preprocessing)
    batch = per_batch(collate([(per_image(image), i) for i, image in enumerate(images)])[0])
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    assert np.array_equal(batch, np.stack([preprocessing(image) for image in images]))


def test_merge_restores_data_order():
    parts = [ShardOutput([0, 2], [[1], [3]], [(4, "bad")], 1.0, 0.5), ShardOutput([1, 3], [[2], [4]], [], 2.0, 0.1)]
    merged = ShardOutput.merge(parts)
    assert (merged.positions, merged.topk, merged.failed) == ([0, 1, 2, 3], [[1], [2], [3], [4]], [(4, "bad")])
    assert (merged.seconds, merged.wait_seconds) == (2.0, 0.1)  # the slowest rank's timings


def test_two_gloo_processes_give_the_single_process_numbers(tmp_path, photos, capsys):
    root = _folder_tree(tmp_path / "data", photos)
    (root / "0" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    common = [root, "--workers", "0", "--batch-size", "2"]
    assert _run([*common, "--json", tmp_path / "one.json"], capsys)[0] == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    double = subprocess.run([*launcher, "-m", "effnet", "eval", *map(str, common), "--no-progress",
                             "--json", str(tmp_path / "two.json")], env=env, capture_output=True, text=True, timeout=300)
    assert double.returncode == 0, double.stderr
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert "2 processes" in double.stdout and double.stdout.count("Top_1:") == 1  # rank 0 alone prints
    for key in ("images", "evaluated", "skipped", "Top_1_Accuracy", "Top_5_Accuracy", "failed", "predictions"):
        assert one[key] == two[key], key
    assert one["skipped"] == 1 and 0 < one["Top_1_Accuracy"] < 1


def test_json_output_path_problems_are_one_line(tmp_path, photos, capsys):
    (tmp_path / "data" / "281").mkdir(parents=True)
    photos["chelsea"].save(tmp_path / "data" / "281" / "c.jpg")
    code, _, err = _run([tmp_path / "data", "--json", tmp_path, "--workers", "0"], capsys)
    assert code == 2 and "is a folder; give a file name" in err  # refused before any image is decoded

    code, _, _ = _run([tmp_path / "data", "--json", tmp_path / "new" / "r.json", "--workers", "0"], capsys)
    assert code == 0 and json.loads((tmp_path / "new" / "r.json").read_text())["evaluated"] == 1

    (tmp_path / "afile").write_text("")
    code, _, err = _run([tmp_path / "data", "--json", tmp_path / "afile" / "r.json", "--workers", "0"], capsys)
    assert code == 2 and "a part of this path is a file, not a folder" in err


def test_missing_data_folder_is_named_as_missing(tmp_path, capsys):
    code, _, err = _run([tmp_path / "nope"], capsys)
    assert code == 1 and err == f"effnet: error: {tmp_path / 'nope'}: folder not found (DATA is an ImageFolder tree or an image folder with --labels)\n"
    (tmp_path / "a.jpg").write_bytes(b"")
    code, _, err = _run([tmp_path / "a.jpg"], capsys)
    assert code == 1 and "a.jpg: not a directory" in err
