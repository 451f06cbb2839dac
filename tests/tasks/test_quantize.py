"""``effnet quantize`` as a command: options reach ``quantize()``, the JSON report is written
where asked, the markdown printed, and mistakes are one-line errors.

The quantization itself is tested in tests/deploy/quantize/.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from effnet.cli import main
from effnet.data.transforms import Preprocessing
from effnet.runtime.onnx_metadata import INPUT_FLOAT, read_metadata, write_metadata


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A conv + pool + classifier ONNX file with effnet metadata, and 6 calibration images."""
    root = tmp_path_factory.mktemp("quantize_command")
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["relu"], name="relu"),
         helper.make_node("GlobalAveragePool", ["relu"], ["pooled"], name="pool"),
         helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
         helper.make_node("Gemm", ["flat", "w_fc", "b_fc"], ["logits"], name="classifier", transB=1)],
        "small", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name) for name, shape in
                     (("w", (8, 3, 3, 3)), ("b", (8,)), ("w_fc", (3, 8)), ("b_fc", (3,)))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    write_metadata(model, {"arch": "small_test", "num_classes": 3, "labels": ["a", "b", "c"], "input": INPUT_FLOAT,
                           "preprocessing": Preprocessing(size=16, crop_mode="resize").to_dict()})
    onnx.save(model, str(root / "small.onnx"))
    calib = root / "calib"
    calib.mkdir()
    for index in range(6):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(calib / f"{index}.png")
    return {"model": root / "small.onnx", "calib": calib}


def test_writes_the_model_and_the_report_and_prints_it(small_model: dict[str, Path], tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "small.int8.onnx"
    for old in (output, output.with_suffix(".json")):
        old.write_text("an older run's file")  # replaced, as cp would, and said so
    assert main(["quantize", str(small_model["model"]), "--calib", str(small_model["calib"]), "--num-images", "4",
                 "--keep-float", "0", "--no-bias-correction", "--method", "minmax", "--threads", "1",
                 "--no-progress", "-o", str(output)]) == 0
    out = capsys.readouterr().out
    report = json.loads(output.with_suffix(".json").read_text())
    assert out.startswith(f"## small_test: fp32 vs int8 ({output})")
    assert out.rstrip().splitlines()[-3:] == [f"replaced {output}", f"replaced {output.with_suffix('.json')}",
                                              f"wrote {output} and {output.with_suffix('.json')}"]
    assert report["calibration"]["images"] == 4 and report["speed"]["threads"] == 1
    assert report["settings"]["method"] == "minmax" and report["settings"]["bias_correction"] is False
    assert report["keep_float"]["requested"] == 0 and report["float_layers"] == []
    assert read_metadata(output)["quantization"]["method"] == "minmax"


def test_report_goes_where_asked(small_model: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "reports" / "run.json"
    assert main(["quantize", str(small_model["model"]), "--calib", str(small_model["calib"]), "--num-images", "2",
                 "--keep-float", "0", "--no-speed", "--report", str(report), "-o", str(tmp_path / "x.onnx")]) == 0
    assert "speed" not in json.loads(report.read_text())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports", "x.onnx"]


@pytest.mark.parametrize("arguments", [["--threads", "0"], ["--num-images", "0"], ["--calib-images", "0"],
                                       ["--keep-float", "some"], ["--size", "4"]])
def test_bad_numbers_are_rejected_by_the_parser(small_model: dict[str, Path], tmp_path: Path,
                                                arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``--calib-images`` is export's and bench's name for the count; ``--num-images`` still works."""
    with pytest.raises(SystemExit) as exit_info:
        main(["quantize", str(small_model["model"]), "--calib", str(small_model["calib"]), *arguments,
              "-o", str(tmp_path / "x.onnx")])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("effnet quantize: error: argument ") and arguments[0] in last


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str, code: int = 1) -> None:
    capsys.readouterr()
    assert main(argv) == code
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("effnet: error:") and expected in error


def test_bad_inputs_fail_cleanly(small_model: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "out" / "x.int8.onnx"
    model, calib = str(small_model["model"]), str(small_model["calib"])
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_text("hello, I am a text file")
    _fails(capsys, ["quantize", str(not_onnx), "--calib", calib, "-o", str(output)], "not an ONNX model")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    _fails(capsys, ["quantize", model, "--calib", str(empty), "-o", str(output)], "no images")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for name in ("a.jpg", "b.png"):
        (corrupt / name).write_bytes(b"not an image at all")
    _fails(capsys, ["quantize", model, "--calib", str(corrupt), "-o", str(output)],
           "none of the 2 calibration images can be read")
    _fails(capsys, ["quantize", model, "--calib", calib, "-o", str(tmp_path / "x.int8")],
           "--output should end in .onnx", code=2)
    _fails(capsys, ["quantize", model, "--calib", calib, "--eval-labels", "labels.txt", "-o", str(output)],
           "--eval-labels needs --eval DIR", code=2)
    assert not output.parent.exists()


def test_a_report_that_cannot_be_written_is_refused_before_quantizing(small_model: dict[str, Path],
                                                                      tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    report = tmp_path / "notes.txt" / "run.json"
    _fails(capsys, ["quantize", str(tmp_path / "missing.onnx"), "--calib", str(small_model["calib"]),
                    "--report", str(report), "-o", str(tmp_path / "x.int8.onnx")],
           f"cannot write {report}: {tmp_path / 'notes.txt'} is a file, not a folder", code=2)
    _fails(capsys, ["quantize", str(small_model["model"]), "--calib", str(small_model["calib"]),
                    "--report", str(small_model["model"]), "-o", str(tmp_path / "x.int8.onnx")],
           f"--report {small_model['model']} is the float model", code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_an_unwritable_output_is_named_before_the_report(small_model: dict[str, Path], unwritable_folder: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``-o /read-only/q.onnx`` said "cannot write /read-only/q.json": the report, which the user
    did not name, instead of the file they asked for."""
    output = unwritable_folder / "q.onnx"
    assert main(["quantize", str(small_model["model"]), "--calib", str(small_model["calib"]), "-o", str(output)]) == 2
    assert capsys.readouterr().err.startswith(f"effnet: error: cannot write {output}: ")
