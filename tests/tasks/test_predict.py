"""``effnet predict``: the command's contract (the Predictor itself: tests/runtime/test_predictor.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effnet.cli import main

ROOT = Path(__file__).resolve().parents[2]
ESPRESSO = str(ROOT / "examples/images/espresso.jpg")


def test_cli_predicts_bundled_photos_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", ESPRESSO, "--json", "--topk", "2"])
    assert code == 0
    document = json.loads(capsys.readouterr().out)
    (result,) = document["results"]
    assert (document["model"], document["engine"]) == ("efficientnet_lite0", "onnxruntime")  # engine auto
    assert result["predictions"][0]["index"] == 967 and len(result["predictions"]) == 2


def test_json_path_is_written_whole_next_to_the_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", ESPRESSO, "--topk", "2", "--json", str(tmp_path / "out" / "p.json")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(ESPRESSO) and "espresso" in out  # the tables still print
    document = json.loads((tmp_path / "out" / "p.json").read_text())
    assert [p["index"] for p in document["results"][0]["predictions"]][0] == 967
    (tmp_path / "folder.json").mkdir()
    assert main(["predict", ESPRESSO, "--json", str(tmp_path / "folder.json")]) == 2  # refused before predicting
    assert "is a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # an image taken for the output is refused, never overwritten
        main(["predict", "--json", ESPRESSO])


def test_device_threads_and_the_old_backend_spelling_reach_the_engine(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", ESPRESSO, "--backend", "torch", "--device", "cpu", "--threads", "1", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] == "torch"
    assert main(["predict", ESPRESSO, "--device", "gpu"]) == 2
    assert capsys.readouterr().err == "effnet: error: --device gpu: not a torch device (e.g. cpu, cuda, cuda:1)\n"


def test_bad_files_are_reported_and_the_rest_predicted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    notes = tmp_path / "notes.png"
    notes.write_text("not an image")
    good = str(ROOT / "examples/images/espresso.jpg")
    code = main(["predict", str(empty), good, str(tmp_path / "missing.jpg"), str(notes)])
    captured = capsys.readouterr()
    assert code == 1
    assert "espresso" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("effnet: error:")]
    assert len(errors) == 3 and "Traceback" not in captured.err
    assert any("empty.jpg" in e and "empty" in e for e in errors)
    assert any("missing.jpg" in e and "not found" in e for e in errors)


def test_any_image_mode_predicts(tmp_path: Path, acceptance_photos: dict[str, np.ndarray],
                                 capsys: pytest.CaptureFixture[str]) -> None:
    coffee = Image.fromarray(acceptance_photos["coffee"])
    paths = []
    for mode, fmt in (("L", "png"), ("P", "gif"), ("RGBA", "webp"), ("CMYK", "tiff"), ("RGB", "bmp")):
        path = tmp_path / f"coffee_{mode}.{fmt}"
        coffee.convert(mode).save(path)
        paths.append(str(path))
    assert main(["predict", *paths, "--json", "--topk", "1"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    colour = [r for r in results if "_L." not in r["file"]]
    assert all(r["predictions"][0]["index"] == 967 for r in colour)


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "x.jpg", "--model", "efficientnet_b9"]) == 2
    err = capsys.readouterr().err
    assert "unknown model" in err and "efficientnet_lite0" in err
    for arguments in (["x.jpg", "--topk", "0"], ["x.jpg", "--batch-size", "0"], ["x.jpg", "--threads", "0"], []):
        with pytest.raises(SystemExit) as exit_info:
            main(["predict", *arguments])
        assert exit_info.value.code == 2
    assert main(["frobnicate"]) == 2


def test_model_without_local_weights_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(ROOT / "examples/images/cat.jpg"), "--model", "efficientnet_b3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("effnet: error:") and "efficientnet_b3" in err


def test_console_script_help_and_models() -> None:
    run = [sys.executable, "-m", "effnet"]
    help_text = subprocess.run(run + ["predict", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--weights" in help_text and "--topk" in help_text
    listing = subprocess.run(run + ["models"], capture_output=True, text=True, check=True).stdout
    assert "efficientnetv2_xl" in listing and "5,288,548" in listing
    lite0_row = next(line for line in listing.splitlines() if line.startswith("efficientnet_lite0 "))
    assert "tf_in1k" in lite0_row


def test_folders_expand_to_their_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nested = tmp_path / "photos" / "more"
    nested.mkdir(parents=True)
    (tmp_path / "photos" / "cat.jpg").write_bytes((ROOT / "examples" / "images" / "cat.jpg").read_bytes())
    (nested / "espresso.jpg").write_bytes((ROOT / "examples" / "images" / "espresso.jpg").read_bytes())
    (nested / "notes.txt").write_text("not an image")
    assert main(["predict", str(tmp_path / "photos"), "--json", "--topk", "1"]) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [Path(r["file"]).name for r in results] == ["cat.jpg", "espresso.jpg"]
    assert results[1]["predictions"][0]["index"] == 967  # espresso
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty")]) == 2
    assert "no images in this folder" in capsys.readouterr().err


def test_table_columns_stay_aligned_past_nine_ranks(capsys) -> None:
    assert main(["predict", str(ROOT / "examples/images/cat.jpg"), "--topk", "12"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 12
    assert rows[0].startswith("   1. ") and rows[9].startswith("  10. ")
    assert len({row.index("%") for row in rows}) == 1  # the probabilities form one column


def test_a_full_weights_entry_name_needs_no_model(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/weights.md: `--weights efficientnet_lite1.tf_in1k` alone; the entry names its architecture."""
    assert main(["predict", ESPRESSO, "--weights", "efficientnet_lite1.tf_in1k", "--json", "--topk", "1"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["model"] == "efficientnet_lite1"
    assert document["results"][0]["predictions"][0]["index"] == 967
