"""``effnet bench`` on tiny runs: well-formed table/CSV/JSON/PNG, honest skips, checked options.

The pieces (runners, trials, report) are tested in tests/tasks/bench/.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.cli import main
from effnet.tasks.bench.runners import RUNNERS, check_runners

def exit_code(argv: list[str]) -> int:
    """``main``'s status, also for options argparse refuses (it exits 2 itself)."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


TINY = ["--models", "lite0", "--size", "64", "--budget", "0.1", "--rounds", "2", "--warmup", "1",
        "--min-repeats", "2", "--threads", "1"]


def test_tiny_run_writes_csv_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = {name: tmp_path / f"bench.{name}" for name in ("csv", "json", "png")}
    code = main(["bench", *TINY, "--batch-sizes", "1,2", "--backends", "torch,torch-cl,cuda-graph",
                 "--csv", str(out["csv"]), "--json", str(out["json"]), "--plot", str(out["png"])])
    assert code == 0
    printed = capsys.readouterr().out
    assert "allocator:" in printed
    if "cuda-graph" in check_runners(["cuda-graph"]):
        assert "skipped cuda-graph: no CUDA device" in printed

    rows = list(csv.DictReader(out["csv"].open()))
    assert {(r["backend"], r["batch_size"]) for r in rows} >= {("torch", "1"), ("torch", "2"), ("torch-cl", "2")}
    for row in rows:
        p50, p90, p99 = float(row["p50_ms"]), float(row["p90_ms"]), float(row["p99_ms"])
        assert 0 < p50 <= p90 <= p99
        assert float(row["throughput_img_s"]) == pytest.approx(int(row["batch_size"]) / float(row["mean_ms"]) * 1e3,
                                                               rel=0.01)
        assert int(row["repeats"]) >= 4 and row["size"] == "64" and row["threads"] == "1"
        assert row["top1"] == "75.1"  # Lite0's reported top-1 from the weights registry
    # the printed table holds the same rows as the CSV, in order (model, backend, batch)
    table = [line.split() for line in printed.splitlines() if line.startswith("lite0 ")]
    assert [(cells[1], cells[2]) for cells in table] == [(r["backend"], r["batch_size"]) for r in rows]

    document = json.loads(out["json"].read_text())
    assert {"cpu", "cores", "torch", "onnxruntime", "numpy", "allocator", "gpu"} <= set(document["machine"])
    assert len(document["results"]) == len(rows)
    assert document["config"]["batch_sizes"] == [1, 2] and document["config"]["threads"] == [1]

    png = out["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "bench.json", "bench.png"]  # no leftovers


def test_json_and_csv_go_to_stdout_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """``--json`` with no PATH (the shared option) and ``--csv -``: stdout holds only the data."""
    assert main(["bench", *TINY, "--rounds", "1", "--batch-sizes", "1", "--backends", "torch", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(r["backend"], r["batch_size"]) for r in document["results"]] == [("torch", 1)]
    assert main(["bench", *TINY, "--rounds", "1", "--batch-sizes", "1", "--backends", "torch", "--csv", "-"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["model"], r["backend"]) for r in rows] == [("efficientnet_lite0", "torch")]


def test_threads_default_to_the_engines_own(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Without --threads each engine keeps its default, and the table says how many that is;
    '0 = default' is gone (omit the option instead)."""
    out = tmp_path / "b.json"
    assert main(["bench", *TINY[:-2], "--rounds", "1", "--batch-sizes", "1", "--backends", "torch",
                 "--json", str(out)]) == 0
    assert [r["threads"] for r in json.loads(out.read_text())["results"]] == [torch.get_num_threads()]
    assert "default threads" in capsys.readouterr().err  # the step log says none was asked for
    assert exit_code(["bench", *TINY[:-2], "--threads", "0"]) == 2
    assert "expected an integer >= 1, not '0'" in capsys.readouterr().err


def test_unavailable_backends_are_named_with_a_reason() -> None:
    reasons = check_runners(list(RUNNERS))
    if not torch.cuda.is_available():
        assert "no CUDA device" in reasons["cuda-fp16"]
    assert main(["bench", *TINY, "--backends", "tensorrt"]) == 2


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["bench", "--batch-sizes", "one"]) == 2
    assert main(["bench", "--models", "b99"]) == 2
    assert "error:" in capsys.readouterr().err


def test_unwritable_outputs_are_refused_before_timing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    for option, name in (("--csv", "b.csv"), ("--json", "b.json"), ("--plot", "b.png")):
        assert main(["bench", *TINY, "--backends", "torch", option, str(blocker / name)]) == 2
        captured = capsys.readouterr()
        assert "machine:" not in captured.out and "round 1/2" not in captured.err  # nothing was timed
    assert exit_code(["bench", *TINY, "--json", str(tmp_path / "results.txt")]) == 2
    assert "ending in .json" in capsys.readouterr().err


def test_a_plot_format_matplotlib_cannot_write_is_refused_before_timing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--plot bench.txt`` used to end a whole benchmark run in matplotlib's ValueError traceback."""
    assert main(["bench", *TINY, "--backends", "torch", "--plot", str(tmp_path / "bench.txt")]) == 2
    captured = capsys.readouterr()
    assert "machine:" not in captured.out and "round 1/2" not in captured.err
    assert captured.err.splitlines()[-1].startswith(f"effnet: error: --plot {tmp_path / 'bench.txt'}: ")
    assert ".png" in captured.err and ".svg" in captured.err and not (tmp_path / "bench.txt").exists()


def test_reference_port_is_the_baseline_of_the_ratio_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "--models", "lite0,v2_b0", *TINY[2:], "--batch-sizes", "1",
                 "--backends", "reference,torch", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vs reference" in printed and "skipped reference for v2_b0: no reference port" in printed
    rows = {(r["model"], r["backend"]): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {("efficientnet_lite0", "reference"), ("efficientnet_lite0", "torch"),
                         ("efficientnetv2_b0", "torch")}
    assert rows["efficientnet_lite0", "reference"]["speedup"] == 1.0
    ours = rows["efficientnet_lite0", "torch"]
    assert ours["baseline"] == "reference"
    assert ours["speedup"] == pytest.approx(rows["efficientnet_lite0", "reference"]["p50_ms"] / ours["p50_ms"], rel=1e-2)
    assert rows["efficientnetv2_b0", "torch"]["speedup"] is None


def test_onnx_files_are_made_once_and_int8_needs_calibration_images(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """One export and one quantization per model and size serve every batch size; the
    ``onnxruntime`` name reaches the onnx runner."""
    from PIL import Image

    from effnet.deploy.export import onnx as export_module
    from effnet.deploy.quantize import pipeline

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    exports, quantizations = [], []
    real_export, real_quantize = export_module.export_network, pipeline.quantize
    monkeypatch.setattr(export_module, "export_network", lambda *a, **k: exports.append(k) or real_export(*a, **k))
    monkeypatch.setattr(pipeline, "quantize", lambda *a, **k: quantizations.append(k) or real_quantize(*a, **k))
    assert main(["bench", "--models", "lite0", *TINY[2:], "--batch-sizes", "1,2", "--backends",
                 "onnxruntime,onnx-int8", "--calib", str(calib), "--calib-images", "4",
                 "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert sorted((r["backend"], r["batch_size"]) for r in rows) == [("onnx", 1), ("onnx", 2), ("onnx-int8", 1),
                                                                     ("onnx-int8", 2)]
    assert exports == [{"batch": None, "size": 64}]
    assert len(quantizations) == 1 and quantizations[0]["size"] == 64 and quantizations[0]["num_images"] == 4
    assert all(r["speedup"] > 0 for r in rows)
    assert main(["bench", *TINY, "--backends", "onnx-int8"]) == 2
    assert "needs calibration images: --calib DIR" in capsys.readouterr().err


def test_bad_options_say_which_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--budget", "0"]) == 2
    assert "--budget must be > 0, not 0" in capsys.readouterr().err
    assert main(["bench", "--rounds", "0"]) == 2
    assert "--rounds must be at least 1, not 0" in capsys.readouterr().err
    empty = tmp_path / "calib"
    empty.mkdir()
    if "onnx-int8" not in check_runners(["onnx-int8"]):
        assert main(["bench", "--backends", "onnx-int8", "--calib", str(empty)]) == 2
        assert "no images there" in capsys.readouterr().err


def test_nothing_runnable_is_an_error_not_an_empty_table(capsys: pytest.CaptureFixture[str]) -> None:
    if "cuda" not in check_runners(["cuda"]):
        pytest.skip("this machine has a CUDA device")
    assert main(["bench", "--backends", "cuda", "--budget", "0.1"]) == 1
    assert "nothing to measure: cuda: no CUDA device" in capsys.readouterr().err


def test_without_a_terminal_each_configuration_is_logged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *TINY, "--batch-sizes", "1", "--backends", "torch"]) == 0
    err = capsys.readouterr().err
    assert "[1/2] round 1/2: lite0 torch bs1 1 threads" in err and "[2/2] round 2/2" in err


def test_file_backends_show_their_top1_agreement_with_torch(photo_tree, capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    """fp32 engines on the export agree with torch on every photo; torch rows are not compared."""
    pytest.importorskip("openvino")
    assert main(["bench", *TINY, "--rounds", "1", "--batch-sizes", "1", "--backends", "torch,onnx,openvino",
                 "--photos", str(photo_tree.root), "--json", str(tmp_path / "b.json")]) == 0
    table = capsys.readouterr().out
    assert "top-1 agree" in table
    rows = {r["backend"]: r["top1_agreement"] for r in json.loads((tmp_path / "b.json").read_text())["results"]}
    assert rows == {"torch": None, "onnx": 1.0, "openvino": 1.0}
    assert main(["bench", *TINY, "--backends", "openvino", "--photos", str(tmp_path / "nothing")]) == 2
    assert "--photos" in capsys.readouterr().err


def test_no_progress_silences_the_step_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """Off a terminal bench logs one line per step on stderr; ``--no-progress`` (as in every
    command that draws a bar) turns those off too, and the table is unchanged."""
    run = ["bench", *TINY, "--rounds", "1", "--batch-sizes", "1", "--backends", "torch"]
    assert main(run) == 0
    assert "[1/1] round 1/1" in capsys.readouterr().err
    assert main([*run, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert "round 1/1" not in captured.err and "lite0" in captured.out


@pytest.mark.parametrize("command", ["eval", "quantize", "export", "info", "bench"])
def test_every_command_that_draws_a_bar_takes_no_progress(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code([command, "--help"]) == 0
    assert "--no-progress" in capsys.readouterr().out
