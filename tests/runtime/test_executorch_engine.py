"""The executorch engine: an effnet ``.pte`` program runs in predict/eval/bench as the torch
model does (reference: effnet's torch Lite0 with the same weights, on real photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("executorch")

from effnet.errors import UsageError  # noqa: E402
from effnet.runtime import open_engine, resolve_engine  # noqa: E402
from effnet.runtime.executorch_engine import PteModelError  # noqa: E402
from effnet.runtime.predictor import Predictor  # noqa: E402


def test_a_pte_file_picks_the_executorch_engine() -> None:
    assert resolve_engine("auto", "model.pte") == "executorch"
    with pytest.raises(UsageError, match="--engine executorch"):
        resolve_engine("onnxruntime", "model.pte")


def test_predictor_on_the_program_matches_torch(lite0_pte: Path, acceptance_photos, lite0_predictor) -> None:
    predictor = Predictor(weights=str(lite0_pte), threads=2)
    assert predictor.engine.name == "executorch" and predictor.engine.arch == "efficientnet_lite0"
    for name, photo in acceptance_photos.items():
        ours, reference = predictor(photo), lite0_predictor(photo)
        assert [p.index for p in ours[:3]] == [p.index for p in reference[:3]], name
        assert abs(ours[0].probability - reference[0].probability) < 1e-4


def test_engine_takes_a_batch_of_any_memory_layout(lite0_pte: Path) -> None:
    """Rows are copied contiguous (the runtime ignores strides) and out (it reuses its buffer)."""
    engine = open_engine("executorch", None, str(lite0_pte))
    batch = np.random.default_rng(0).standard_normal((3, 224, 224, 3)).astype(np.float32).transpose(0, 3, 1, 2)
    logits = engine(batch)
    assert logits.shape == (3, 1000) and not np.allclose(logits[0], logits[2])
    assert np.allclose(logits[1], engine(np.ascontiguousarray(batch[1:2]))[0], atol=1e-5)


def test_refused_options_and_files(lite0_pte: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds efficientnet_lite0"):
        open_engine("executorch", "efficientnet_b0", str(lite0_pte))
    with pytest.raises(UsageError, match="fixed size"):
        open_engine("executorch", None, str(lite0_pte), preprocessing={"size": 256})
    with pytest.raises(UsageError, match="CPU only"):
        open_engine("executorch", None, str(lite0_pte), device="cuda")
    with pytest.raises(UsageError, match="needs an exported model"):
        open_engine("executorch", None, "default")
    fake = tmp_path / "fake.pte"
    fake.write_bytes(b"not a program at all")
    with pytest.raises(PteModelError, match="ExecuTorch cannot load"):
        open_engine("executorch", None, str(fake))
