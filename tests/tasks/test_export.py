"""``effnet export`` as a command: options reach the exporter, mistakes are one-line usage
errors before any work, and the output says what was checked and written.

The export itself (numbers against torch, metadata, preprocessing, Triton) is tested in
tests/deploy/export/.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime
import pytest

from effnet.cli import main
from effnet.runtime.onnx_metadata import read_metadata

#: the cheapest real export: random Lite0 weights, one fixed shape
SMALL = ["--model", "efficientnet_lite0", "--weights", "none", "--batch", "1", "--size", "32"]


def test_export_prints_its_checks_and_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "lite0.onnx"
    output.write_text("an older export")  # replaced, as cp would, and said so
    assert main(["export", *SMALL, "--opset", "19", "-o", str(output)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("check network") and "input 1x3x32x32" in out[0]
    assert out[-2] == f"replaced {output}"
    assert out[-1].startswith(f"wrote {output} (") and "efficientnet_lite0, opset 19, input float32_nchw" in out[-1]
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]
    assert read_metadata(output)["weights"] == "random"


def test_format_triton_lays_out_a_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repository = tmp_path / "repo"
    assert main(["export", "--format", "triton", "--model", "efficientnet_lite0", "--weights", "none", "--size",
                 "32", "-o", str(repository), "--name", "lite", "--max-batch", "4", "--kind", "KIND_CPU"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"wrote Triton model repository {repository} (model lite: config.pbtxt, labels.txt, 1/model.onnx)")
    config = (repository / "lite" / "config.pbtxt").read_text()
    assert 'name: "lite"' in config and "max_batch_size: 4" in config and "kind: KIND_CPU" in config
    assert "dims: [ 3, 32, 32 ]" in config and "count: 1" in config  # --size, and the default instances
    assert '\\"size\\": 32' in config  # the preprocessing parameter clients resize by


@pytest.mark.parametrize("arguments, message", [
    (["--opset", "10"], "--opset must be between"),
    (["--bgr"], "--bgr only applies with --with-preprocessing"),
    (["--model", "efficientnet_b9"], "efficientnet_b9"),
    (["--name", "lite"], "--name applies with --format triton only"),
    (["--max-batch", "8"], "--max-batch applies with --format triton only"),
    (["--format", "triton", "--with-preprocessing"], "--format triton exports the network alone"),
])
def test_bad_settings_are_one_line_usage_errors(tmp_path: Path, arguments: list[str], message: str,
                                                capsys: pytest.CaptureFixture) -> None:
    output = "repo" if "triton" in arguments else "m.onnx"
    assert main(["export", "-o", str(tmp_path / output), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments", [["--batch", "0"], ["--size", "big"], ["--calib-count", "0"],
                                       ["--format", "tflite", "--int8", "--calib-images", "0"],
                                       ["--format", "triton", "--instances", "0"],
                                       ["--format", "triton", "--max-queue-delay-us", "-1"]])
def test_bad_axes_and_counts_are_rejected_by_the_parser(tmp_path: Path, arguments: list[str],
                                                         capsys: pytest.CaptureFixture) -> None:
    """Counts are checked where they are parsed: ``--calib-images 0`` loaded the model and ended in
    "none of the 0 calibration images can be read ()"; ``--instances 0`` in a message about
    Triton's field names."""
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "-o", str(tmp_path / "m.onnx"), *arguments])
    assert exit_info.value.code == 2
    assert f"argument {arguments[-2]}" in capsys.readouterr().err


@pytest.mark.parametrize("arguments, message", [
    (["-o", "model.bin"], "--output should end in .onnx"),
    (["--format", "triton", "-o", "m.onnx"], "the model repository folder, not a .onnx file"),
])
def test_output_must_fit_the_format(tmp_path: Path, arguments: list[str], message: str,
                                    capsys: pytest.CaptureFixture) -> None:
    arguments = [str(tmp_path / a) if a.startswith(("model", "m.")) else a for a in arguments]
    assert main(["export", *arguments]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_output_that_cannot_be_written_is_refused_before_the_export(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    output = tmp_path / "notes.txt" / "m.onnx"
    assert main(["export", *SMALL, "-o", str(output)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"effnet: error: cannot write {output}: {tmp_path / 'notes.txt'} is a file, not a folder")


def test_low_opset_exports_a_static_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "lite0_11.onnx"
    assert main(["export", *SMALL, "--opset", "11", "-o", str(output)]) == 0
    assert "efficientnet_lite0, opset 11, input float32_nchw" in capsys.readouterr().out.splitlines()[-1]
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]


def test_nv12_input_and_the_calibration_hand_off(tmp_path: Path, photo_tree,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "nv12.onnx"
    assert main(["export", *SMALL, "--opset", "11", "--input", "nv12", "--input-size", "24x32", "-o", str(output),
                 "--calib", str(photo_tree.root), "--calib-dump", str(tmp_path / "calib"), "--calib-count", "3",
                 "--calib-format", "bin"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in out[:3]] == ["network", "nv12", "nv12"]
    assert "input uint8_nv12" in out[-2]
    assert out[-1] == (f"wrote calibration set {tmp_path / 'calib'}: 3 files of uint8 1x36x32, 3 of 6 classes covered "
                       "(grouped by sub-folder); list.txt, manifest.json")
    assert read_metadata(output)["nv12"] == {"height": 24, "width": 32, "range": "video"}
    assert all((tmp_path / "calib" / name).stat().st_size == 36 * 32
               for name in (tmp_path / "calib" / "list.txt").read_text().split())


@pytest.mark.parametrize("arguments, message", [
    (["--input", "nv12", "--input-size", "224x223"], "NV12 needs even frame sides, not 224x223"),
    (["--input-size", "224x224"], "--input-size and --nv12-range apply with --input nv12 only"),
    (["--opset", "17", "--with-preprocessing"], "--with-preprocessing needs --opset 18 or newer"),
    (["--calib-dump", "calib"], "--calib-dump needs --calib IMAGES_DIR"),
    (["--calib", "no_such_folder", "--calib-dump", "calib"], "no_such_folder: calibration image folder not found"),
    (["--calib", "images"], "--calib needs --calib-dump DIR"),
])
def test_bad_npu_settings_are_one_line_usage_errors(tmp_path: Path, arguments: list[str], message: str,
                                                    capsys: pytest.CaptureFixture) -> None:
    assert main(["export", "-o", str(tmp_path / "m.onnx"), *arguments]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []
