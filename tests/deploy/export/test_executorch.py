"""``effnet export --format executorch``: a ``.pte`` program delegated to XNNPACK that gives
torch's answers (checked before it is written), carries its metadata, and refuses what does
not apply. Reference: effnet's torch Lite0 with the same embedded weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch")

from effnet.cli import main  # noqa: E402
from effnet.deploy.export import executorch  # noqa: E402
from effnet.deploy.export.onnx import ExportError  # noqa: E402
from effnet.runtime.executorch_engine import METADATA_METHOD, load_program  # noqa: E402


def test_program_is_delegated_to_xnnpack_and_carries_metadata(lite0_pte: Path) -> None:
    program, metadata = load_program(str(lite0_pte))
    assert program.method_names == {"forward", METADATA_METHOD}
    assert metadata["arch"] == "efficientnet_lite0" and metadata["delegate"] == "XNNPACK"
    assert metadata["preprocessing"]["size"] == 224 and metadata["num_classes"] == 1000
    assert b"XnnpackBackend" in lite0_pte.read_bytes()  # the delegate's payload, not portable kernels


def test_a_program_that_disagrees_with_torch_is_not_written(tmp_path: Path, monkeypatch) -> None:
    """The check runs the written bytes: a program lowered from other weights must be refused."""
    from effnet.runtime.torch_engine import TorchEngine

    net = TorchEngine.load("efficientnet_lite0", "default", channels_last=False).model
    lower = executorch.lower

    def lowered_from_other_weights(module, size, metadata):
        import copy

        import torch

        other = copy.deepcopy(module)
        with torch.no_grad():
            other.classifier.bias.add_(1.0)
        return lower(other, size, metadata)

    monkeypatch.setattr(executorch, "lower", lowered_from_other_weights)
    target = tmp_path / "bad.pte"
    with pytest.raises(ExportError, match="does not match torch"):
        executorch.export_executorch_network(net, target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_cli_refuses_options_that_do_not_apply(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for extra in (["--int8"], ["--opset", "13"], ["--batch", "4"], ["--input", "nv12"]):
        assert main(["export", "--format", "executorch", "-o", str(tmp_path / "x.pte"), *extra]) == 2
        assert "does not apply to --format executorch" in capsys.readouterr().err
    assert main(["export", "--format", "executorch", "-o", str(tmp_path / "x.onnx")]) == 2
    assert "should end in .pte" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_engine_output_equals_the_programs_own_check(lite0_pte: Path) -> None:
    """The engine and the export check run the same rows the same way."""
    from effnet.runtime import open_engine

    engine = open_engine("executorch", None, str(lite0_pte))
    batch = engine.example_input(2)
    assert np.allclose(engine(batch), engine(batch[::-1])[::-1], atol=1e-6)
