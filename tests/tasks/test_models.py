"""``effnet models``: the table, and ``--json [PATH]`` with the meaning it has in every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from effnet.cli import main
from effnet.models.variants import list_models, resolve


def test_json_to_stdout_replaces_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["model"] for row in rows] == list_models()
    b0 = rows[0]
    assert b0["params"] == resolve("efficientnet_b0").num_params() == 5288548  # torchvision's published count
    assert "efficientnet_b0.tv_in1k" in b0["weights_known"]


def test_json_to_a_file_keeps_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    destination = tmp_path / "models.json"
    assert main(["models", "--json", str(destination)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model ") and "efficientnetv2_xl" in out
    assert [row["model"] for row in json.loads(destination.read_text())] == list_models()


def test_json_needs_a_json_file_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["models", "--json", "models.txt"])
    assert exit_.value.code == 2 and "expected '-' (stdout) or a file ending in .json" in capsys.readouterr().err
