"""The report: speed numbers from the shared timing loop, and the markdown users read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from effnet.deploy.quantize import report as report_module
from effnet.deploy.quantize.report import markdown, measure_speed
from effnet.runtime.timing import time_calls


def test_speed_is_timed_in_interleaved_rounds_through_the_shared_loop(tmp_path: Path, tiny_graph,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "tiny.onnx"
    onnx.save(tiny_graph(), str(model))
    calls: list[int] = []

    def counting(run, **options):
        calls.append(options["min_repeats"])
        return time_calls(run, **options)

    monkeypatch.setattr(report_module, "time_calls", counting)
    image = np.zeros((3, 32, 32), np.float32)
    speeds = measure_speed([model, model], image, threads=1, rounds=2)
    assert calls == [10, 2] * 4  # 2 rounds x 2 models, each: batch 1 then batch 16
    for speed in speeds:
        assert set(speed) == {"latency_bs1_ms", "throughput_bs16_img_s"}
        assert speed["latency_bs1_ms"] > 0 and speed["throughput_bs16_img_s"] > 0


def test_markdown_shows_what_the_report_says() -> None:
    report = {
        "arch": "tiny_test", "output": "tiny.int8.onnx", "images": 12, "compared_on": "eval",
        "top1_agreement": 0.9166, "accuracy": {"fp32": 0.5, "int8": 0.4167},
        "size_mb": {"fp32": 4.0, "int8": 1.0},
        "speed": {"threads": 2, "fp32": {"latency_bs1_ms": 4.0, "throughput_bs16_img_s": 100.0},
                  "int8": {"latency_bs1_ms": 2.0, "throughput_bs16_img_s": 150.0},
                  "speedup": {"latency_bs1_ms": 2.0, "throughput_bs16_img_s": 1.5},
                  "fp32_graph": "the float model as given"},
        "keep_float": {"chosen": 1, "trials": [
            {"float_layers": [], "relative_error": 0.3, "outcome": "kept"},
            {"float_layers": ["conv_a"], "relative_error": None, "outcome": "runs int8"},
            {"float_layers": ["conv_b"], "relative_error": 0.1, "outcome": "kept"}]},
        "sensitivity": [{"layer": "conv_b", "kind": "expand 1x1", "relative_error": 0.5, "kept_float": True},
                        {"layer": "conv_a", "kind": "stem 3x3", "relative_error": 0.01, "kept_float": False}],
    }
    text = markdown(report)
    assert text.startswith("## tiny_test: fp32 vs int8 (tiny.int8.onnx)")
    assert "| top-1 agreement (12 images: eval) | | | 91.7% |" in text
    assert "| top-1 accuracy | 50.00% | 41.67% | -8.33 pt |" in text
    assert "| model size | 4.0 MB | 1.0 MB | 4.00x smaller |" in text
    assert "| latency batch 1 (2 threads) | 4.0 ms | 2.0 ms | 2.00x speed |" in text
    assert "| throughput batch 16 (2 threads) | 100.0 img/s | 150.0 img/s | 1.50x speed |" in text
    assert "| conv_b | expand 1x1 | 0.5000 | float |" in text and "| conv_a | stem 3x3 | 0.0100 | int8 |" in text
    assert text.endswith("| none | 0.3000 | kept |\n| conv_a |  | runs int8 |\n| conv_b | 0.1000 | kept |")
