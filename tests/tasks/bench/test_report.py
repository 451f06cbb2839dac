"""The report: an aligned plain-text table, CSV to stdout, the plot written whole in its format."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from effnet.tasks.bench.report import plot, table_lines, write_csv
from effnet.tasks.bench.trials import BenchResult

MACHINE = {"cpu": "Test CPU", "cores": 2, "gpu": None, "torch": "2.x", "allocator": "glibc"}


def _results() -> list[BenchResult]:
    return [
        BenchResult("efficientnet_lite0", "reference", 1, 2, 224, 0.02158, 0.0221, 0.0229, 0.02246, 44.52, 93, 0.31,
                    75.1, "reference", 1.0),
        BenchResult("efficientnet_lite0", "onnx", 16, 2, 224, 0.09583, 0.0971, 0.1, 0.09969, 160.5, 21, 0.05, 75.1,
                    "reference", None),
    ]


def test_table_is_aligned_text_with_the_baseline_column() -> None:
    assert table_lines(_results()) == [
        "model  backend    batch  threads  size  p50 ms  p90 ms  p99 ms  img/s  vs reference  repeats  first call s",
        "-----  ---------  -----  -------  ----  ------  ------  ------  -----  ------------  -------  ------------",
        "lite0  reference      1        2   224   21.58   22.10   22.90   44.5         1.00x       93          0.31",
        "lite0  onnx          16        2   224   95.83   97.10  100.00  160.5             -       21          0.05",
    ]


def test_csv_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    write_csv("-", _results())
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["backend"], r["p50_ms"], r["speedup"]) for r in rows] == [("reference", "21.58", "1.0"),
                                                                        ("onnx", "95.83", "")]


@pytest.mark.parametrize("name, magic", [("bench.png", b"\x89PNG"), ("bench.svg", b"<?xml"), ("bench", b"\x89PNG")])
def test_plot_format_follows_the_file_name(tmp_path: Path, name: str, magic: bytes) -> None:
    plot(str(tmp_path / name), _results(), MACHINE)
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # written whole: no temporary left beside it
