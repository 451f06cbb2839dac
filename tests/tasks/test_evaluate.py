"""``effnet eval``: what the command prints and writes for the library's report (the loop itself:
tests/runtime/test_evaluation.py), skipped images, limit, class maps, JSON destinations, and the
same numbers from two gloo processes as from one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from effnet.cli import main
from effnet.data.datasets import LabelResolver, load_eval_set, spread
from effnet.runtime.evaluation import evaluate

SRC = Path(__file__).resolve().parents[2] / "src"


def _run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["eval", *map(str, args), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_command_reports_what_the_library_computes(tmp_path, photo_tree, lite0_predictor, capsys):
    code, out, _ = _run([photo_tree.root, "--json", tmp_path / "r.json", "--workers", "0", "--batch-size", "4"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    engine = lite0_predictor.engine
    report = evaluate(engine, load_eval_set(photo_tree.root, LabelResolver(class_names=engine.labels)), workers=0)
    assert 0 < report.top1 < report.top5 < 1  # the set has hits and misses, so the check means something
    assert result["predictions"] == report.predictions
    assert (result["Top_1_Accuracy"], result["Top_5_Accuracy"]) == (report.top1, report.top5)
    assert (result["images"], result["evaluated"], result["skipped"]) == (6, 6, 0)
    assert (result["model"], result["engine"], result["weights"]) == ("efficientnet_lite0", "onnxruntime",
                                                                       "efficientnet_lite0.tf_in1k")
    assert f"Top_1: {report.top1:.5f}" in out and "Top_5_Accuracy" in out and "skipped  0" in out
    assert "(weights efficientnet_lite0.tf_in1k, onnxruntime engine)" in out


def test_corrupt_images_are_counted_listed_and_skipped(tmp_path, photo_thumbnails, capsys):
    root = tmp_path / "data"
    (root / "281").mkdir(parents=True)
    photo_thumbnails["chelsea"].save(root / "281" / "chelsea.jpg")
    (root / "281" / "empty.jpg").write_bytes(b"")
    (root / "281" / "text.png").write_text("not an image")
    whole = (root / "281" / "chelsea.jpg").read_bytes()
    (root / "281" / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    code, out, _ = _run([root, "--workers", "2", "--batch-size", "2", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert (result["images"], result["evaluated"], result["skipped"]) == (4, 1, 3)
    assert {f["file"] for f in result["failed"]} == {"281/empty.jpg", "281/text.png", "281/cut.jpg"}
    assert "skipped  3 unreadable images, not counted:" in out and "281/cut.jpg: " in out
    assert "4 images, 1 class\n" in out and "on 1 image\n" in out


def test_nothing_readable_is_an_error(tmp_path, capsys):
    (tmp_path / "5").mkdir()
    (tmp_path / "5" / "a.jpg").write_bytes(b"junk")
    code, _, err = _run([tmp_path, "--workers", "0"], capsys)
    assert code == 1 and "no image could be evaluated (1 unreadable)" in err


def test_limit_spreads_over_the_set_and_per_class(tmp_path, photo_tree, capsys):
    root = photo_tree.root
    code, out, _ = _run([root, "--limit", "3", "--per-class", "--workers", "0", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert spread(6, 3) == [0, 2, 4]
    assert [p["file"] for p in result["predictions"]] == ["0/flower.jpg", "281/chelsea.png", "698/china.jpg"]
    assert [c["index"] for c in result["per_class"]] == [0, 281, 698]
    assert "  281  tabby cat" in out


def test_class_map_and_usage_errors(tmp_path, photo_thumbnails, capsys):
    (tmp_path / "data" / "kitty").mkdir(parents=True)
    photo_thumbnails["chelsea"].save(tmp_path / "data" / "kitty" / "c.jpg")
    (tmp_path / "map.txt").write_text("kitty 281\n")
    code, _, _ = _run([tmp_path / "data", "--class-map", tmp_path / "map.txt", "--workers", "0",
                       "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["predictions"][0]["target"] == [281]
    code, _, err = _run([tmp_path / "data", "--workers", "0"], capsys)
    assert code == 1 and "kitty: cannot map class 'kitty'" in err and "--class-map" in err
    code, _, err = _run([tmp_path / "data", "--workers", "-1"], capsys)
    assert code == 2 and "--workers must be 0 or more" in err
    with pytest.raises(SystemExit):
        _run([tmp_path / "data", "--batch-size", "0"], capsys)
    assert "--batch-size/-b: expected an integer >= 1, not '0'" in capsys.readouterr().err


def test_fine_tuned_model_folders_named_by_its_classes(tmp_path, photo_thumbnails, capsys):
    from effnet.weights.io import write_safetensors
    from effnet.weights.loading import create_model

    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=3)
    names = ["cat", "cup", "rocket"]
    write_safetensors(model.state_dict(), tmp_path / "ft.safetensors",
                      {"arch": "efficientnet_lite0", "labels": names, "num_classes": 3})
    for folder, photo in zip(names, ("chelsea", "coffee", "rocket")):
        (tmp_path / "data" / folder).mkdir(parents=True)
        photo_thumbnails[photo].save(tmp_path / "data" / folder / "x.jpg")
    code, out, _ = _run([tmp_path / "data", "--weights", tmp_path / "ft.safetensors", "--workers", "0",
                         "--per-class", "--json", tmp_path / "r.json"], capsys)
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert [p["target"] for p in result["predictions"]] == [[0], [1], [2]]
    assert all(len(p["top3"]) == 3 for p in result["predictions"])  # top-k capped at the class count
    assert result["Top_3_Accuracy"] == 1.0 and "cup" in out


def test_two_gloo_processes_give_the_single_process_numbers(tmp_path, photo_tree, capsys):
    root = photo_tree.root
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


def test_json_output_path_problems_are_one_line(tmp_path, photo_thumbnails, capsys):
    (tmp_path / "data" / "281").mkdir(parents=True)
    photo_thumbnails["chelsea"].save(tmp_path / "data" / "281" / "c.jpg")
    (tmp_path / "out.json").mkdir()
    code, _, err = _run([tmp_path / "data", "--json", tmp_path / "out.json", "--workers", "0"], capsys)
    assert code == 2 and "is a folder; give a file name" in err  # refused before any image is decoded

    code, _, _ = _run([tmp_path / "data", "--json", tmp_path / "new" / "r.json", "--workers", "0"], capsys)
    assert code == 0 and json.loads((tmp_path / "new" / "r.json").read_text())["evaluated"] == 1

    (tmp_path / "afile").write_text("")
    code, _, err = _run([tmp_path / "data", "--json", tmp_path / "afile" / "r.json", "--workers", "0"], capsys)
    assert code == 2 and "a part of this path is a file, not a folder" in err


def test_bare_json_goes_to_stdout_and_the_summary_to_stderr(tmp_path, photo_thumbnails, capsys):
    (tmp_path / "281").mkdir()
    photo_thumbnails["chelsea"].save(tmp_path / "281" / "c.jpg")
    for flags in (["--json"], ["--json", "-"]):
        code, out, err = _run([tmp_path, "--workers", "0", *flags], capsys)
        assert code == 0 and json.loads(out)["evaluated"] == 1
        assert "Top_1:" in err and "Top_1:" not in out


def test_the_device_is_the_engine_s_business(tmp_path, tiny_classifier, photo_thumbnails, capsys):
    (tmp_path / "data" / "281").mkdir(parents=True)
    photo_thumbnails["chelsea"].save(tmp_path / "data" / "281" / "c.jpg")
    model = tiny_classifier(tmp_path / "m.onnx")
    code, _, err = _run([tmp_path / "data", "--weights", model, "--device", "cuda"], capsys)
    assert code == 2 and err == ("effnet: error: --device cuda: the onnxruntime engine runs on the CPU only "
                                 "(--engine torch runs on a GPU)\n")
    code, out, _ = _run([tmp_path / "data", "--weights", model, "--device", "cpu", "--threads", "1", "--workers", "0"],
                        capsys)
    assert code == 0 and "onnxruntime engine" in out
    assert "(class folders): 1 image, 1 class\n" in out and "on 1 image\n" in out  # singular for one


def test_missing_data_folder_is_named_as_missing(tmp_path, capsys):
    code, _, err = _run([tmp_path / "nope"], capsys)
    assert code == 1 and err == (f"effnet: error: {tmp_path / 'nope'}: folder not found "
                                 "(an ImageFolder tree, or an image folder with a label file)\n")
    (tmp_path / "a.jpg").write_bytes(b"")
    code, _, err = _run([tmp_path / "a.jpg"], capsys)
    assert code == 1 and "a.jpg: not a directory" in err


def test_preprocessing_options_reach_the_engine(tmp_path, photo_thumbnails, capsys):
    (tmp_path / "281").mkdir()
    photo_thumbnails["chelsea"].save(tmp_path / "281" / "c.jpg")
    code, out, _ = _run([tmp_path, "--workers", "0", "--size", "192", "--crop-pct", "1", "--interpolation",
                         "bilinear", "--mean", "0.5", "--std", "0.5,0.5,0.5", "--json"], capsys)
    assert code == 0
    assert json.loads(out)["preprocessing"] == {"size": 192, "crop_fraction": 1.0, "crop_mode": "center_crop_then_resize",
                                                "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
    code, _, err = _run([tmp_path, "--workers", "0", "--mean", "127.5"], capsys)
    assert code == 2 and err == "effnet: error: preprocessing mean is on the 0-1 scale (127.5 / 255 = 0.5)\n"



def test_size_is_the_test_size_with_the_weights_crop_rule_scaled(tmp_path, photo_thumbnails, capsys):
    """``--size`` is timm's test size (``--test-size``, ``test_input_size``): the weights' own recipe
    at another resolution (``Preprocessing.with_size``): Lite0's TF crop keeps its 32-pixel margin,
    S / (S + 32), where a fixed crop fraction would have kept 224 / 256."""
    from effnet.weights.registry import get_weights

    (tmp_path / "281").mkdir()
    photo_thumbnails["chelsea"].save(tmp_path / "281" / "c.jpg")
    code, out, _ = _run([tmp_path, "--workers", "0", "--size", "260", "--json"], capsys)
    assert code == 0
    recipe = get_weights("efficientnet_lite0.tf_in1k").preprocessing
    assert json.loads(out)["preprocessing"] == json.loads(json.dumps(recipe.with_size(260).to_dict()))
    assert json.loads(out)["preprocessing"]["crop_fraction"] == pytest.approx(260 / 292)
