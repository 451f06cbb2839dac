"""``effnet bench`` on a tiny run: well-formed CSV/JSON/PNG, honest skips, sane statistics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from effnet.cli import main
from effnet.tasks.bench import BACKENDS, BenchConfig, check_backends, measure, summarize, time_runner

TINY = ["--models", "lite0", "--size", "64", "--budget", "0.1", "--rounds", "2", "--warmup", "1",
        "--min-repeats", "2", "--threads", "1"]


def test_tiny_run_writes_csv_json_and_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = {name: tmp_path / f"bench.{name}" for name in ("csv", "json", "png")}
    code = main(["bench", *TINY, "--batch-sizes", "1,2", "--backends", "torch,torch-cl,cuda-graph",
                 "--csv", str(out["csv"]), "--json", str(out["json"]), "--plot", str(out["png"])])
    assert code == 0
    printed = capsys.readouterr().out
    assert "allocator:" in printed
    if "cuda-graph" in check_backends(["cuda-graph"]):
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

    document = json.loads(out["json"].read_text())
    assert {"cpu", "cores", "torch", "onnxruntime", "numpy", "allocator", "gpu"} <= set(document["machine"])
    assert len(document["results"]) == len(rows)

    png = out["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_budget_and_minimum_repeats_are_honoured() -> None:
    calls = []
    samples, first = time_runner(lambda: calls.append(1), BenchConfig(budget=0.05, warmup=2, min_repeats=3))
    assert len(samples) >= 3 and len(calls) == 1 + 2 + len(samples) and first >= 0


def test_percentiles_follow_numpy() -> None:
    result = summarize("m", BenchConfig(batch_size=4), 64, [0.01 * i for i in range(1, 101)], 0.5, threads=1)
    assert result.p50 == pytest.approx(0.505) and result.p90 == pytest.approx(0.901)
    assert result.p99 == pytest.approx(0.9901) and result.throughput == pytest.approx(4 / 0.505)


def test_formats_do_not_leak_between_backends() -> None:
    """Timing channels_last must not convert the module the NCHW run uses next."""
    import torch

    from effnet.tasks.bench import load_module

    module = load_module("efficientnet_lite0")
    measure("efficientnet_lite0", BenchConfig("torch-cl", size=64, budget=0.01, warmup=0, min_repeats=1), module)
    assert module.conv_stem.weight.is_contiguous()
    assert not module.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)


def test_unavailable_backends_are_named_with_a_reason() -> None:
    reasons = check_backends(list(BACKENDS))
    import torch

    if not torch.cuda.is_available():
        assert "no CUDA device" in reasons["cuda-fp16"]
    assert main(["bench", *TINY, "--backends", "tensorrt"]) == 2


def test_bad_arguments_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--batch-sizes", "one"]) == 2
    assert main(["bench", "--models", "b99"]) == 2
    assert "error:" in capsys.readouterr().err


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


def test_onnx_int8_is_quantized_once_and_needs_calibration_images(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from effnet.tasks import quantize as quantize_task

    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(calib / f"{i}.png")
    calls = []
    real = quantize_task.quantize
    monkeypatch.setattr(quantize_task, "quantize", lambda *a, **k: calls.append(k) or real(*a, **k))
    assert main(["bench", "--models", "lite0", *TINY[2:], "--batch-sizes", "1,2", "--backends", "onnx,onnx-int8",
                 "--calib", str(calib), "--calib-images", "4", "--json", str(tmp_path / "b.json")]) == 0
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert sorted((r["backend"], r["batch_size"]) for r in rows) == [("onnx", 1), ("onnx", 2), ("onnx-int8", 1),
                                                                     ("onnx-int8", 2)]
    assert len(calls) == 1 and calls[0]["size"] == 64 and calls[0]["num_images"] == 4
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
    if "onnx-int8" not in check_backends(["onnx-int8"]):
        assert main(["bench", "--backends", "onnx-int8", "--calib", str(empty)]) == 2
        assert "no images there" in capsys.readouterr().err


def test_nothing_runnable_is_an_error_not_an_empty_table(capsys: pytest.CaptureFixture[str]) -> None:
    if "cuda" not in check_backends(["cuda"]):
        pytest.skip("this machine has a CUDA device")
    assert main(["bench", "--backends", "cuda", "--budget", "0.1"]) == 1
    assert "nothing to measure: cuda: no CUDA device" in capsys.readouterr().err


def test_without_a_terminal_each_configuration_is_logged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *TINY, "--batch-sizes", "1", "--backends", "torch"]) == 0
    err = capsys.readouterr().err
    assert "[1/2] round 1/2: lite0 torch bs1 1 threads" in err and "[2/2] round 2/2" in err
