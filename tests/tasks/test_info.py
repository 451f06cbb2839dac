"""``effnet info``: rows with the registry's reported accuracy, three formats, one-line errors.

(The counts themselves are checked against the papers in tests/models/test_counting.py.)"""

from __future__ import annotations

import csv
import json

import pytest

from effnet.cli import main
from effnet.tasks.info import info_rows, to_csv, to_document, to_markdown


def test_rows_carry_reported_accuracy_from_the_registry() -> None:
    rows = {r["model"]: r for r in info_rows(["lite0", "b0"])}
    assert rows["efficientnet_lite0"]["top1"] == 75.1  # tensorflow/tpu Lite README, via the registry
    assert rows["efficientnet_lite0"]["weights"] == "efficientnet_lite0.tf_in1k"
    assert rows["efficientnet_b0"]["params_m"] == pytest.approx(5.289, abs=1e-3)


def test_formats_are_well_formed() -> None:
    rows = info_rows(["lite0"], size=64)
    parsed = list(csv.DictReader(to_csv(rows).splitlines()))
    assert parsed[0]["model"] == "efficientnet_lite0" and parsed[0]["size"] == "64"
    document = json.loads(json.dumps(to_document(rows)))  # what --json writes
    assert "multiply-adds" in document["convention"] and document["models"][0]["macs_g"] == rows[0]["macs_g"]
    table = to_markdown(rows).splitlines()
    assert len(table) == 3 and table[0].count("|") == table[2].count("|")


def test_cli_prints_convention_and_rejects_unknown_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--models", "lite0", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "multiply-adds" in out and "efficientnet_lite0" in out
    assert main(["info", "--models", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert main(["info", "--models", "lite0,b99"]) == 2  # suggests as --model does (it suggested nothing)
    assert "unknown model 'b99'. Did you mean efficientnet_b8, efficientnet_b7, efficientnet_b6?" in capsys.readouterr().err


def test_markdown_columns_line_up_in_a_terminal() -> None:
    rows = info_rows(["b0", "lite0"], size=64)
    table = to_markdown(rows).splitlines()
    assert len({len(line) for line in table}) == 1  # every line padded to the same column widths
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    for cell, row in zip(cells, rows):
        assert cell[1] == f"{row['params_m']:.3f}" and cell[2] == f"{row['macs_g']:.3f}"  # numbers align on the point
        assert cell[5] == "1.0" and cell[6] == "1.0"
    assert cells[1][8] == "-"  # Lite0's publisher reports no top-5


def test_models_that_names_no_model_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """``--models ,`` (or ``--models ""`` from an empty shell variable) counted every variant, as
    if the option were absent; bench refuses it the same way."""
    assert main(["info", "--models", ","]) == 2
    assert capsys.readouterr().err == "effnet: error: --models names no model (e.g. --models b0,lite0)\n"


def test_json_and_csv_go_to_files_or_stdout_as_in_bench(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """--json [PATH] and --csv PATH mean what they mean in bench and eval; --format (its name
    before 0.4.1, a clash with export's --format) still prints that format."""
    assert main(["info", "--models", "lite0", "--size", "64", "--json", str(tmp_path / "i.json"),
                 "--csv", str(tmp_path / "i.csv")]) == 0
    assert "multiply-adds" in capsys.readouterr().out  # the table still prints beside the files
    document = json.loads((tmp_path / "i.json").read_text())
    assert document["models"][0]["model"] == "efficientnet_lite0"
    assert next(csv.DictReader((tmp_path / "i.csv").read_text().splitlines()))["size"] == "64"
    assert main(["info", "--models", "lite0", "--size", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["models"][0]["size"] == 64  # stdout is JSON alone
    assert main(["info", "--models", "lite0", "--size", "64", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("model,family,")
    assert main(["info", "--models", "lite0", "--json", "--csv", "-"]) == 2
    assert "cannot both print to stdout" in capsys.readouterr().err
    (tmp_path / "folder.json").mkdir()
    assert main(["info", "--models", "lite0", "--json", str(tmp_path / "folder.json")]) == 2  # before counting
    assert "is a folder" in capsys.readouterr().err
