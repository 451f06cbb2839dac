"""The litert engine: an effnet ``.tflite`` file runs in predict/eval/bench as the torch model
does (reference: effnet's torch Lite0 with the same weights, on real photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from effnet.errors import UsageError  # noqa: E402
from effnet.runtime import open_engine, resolve_engine  # noqa: E402
from effnet.runtime.predictor import Predictor  # noqa: E402
from effnet.runtime.tflite_metadata import TfliteModelError  # noqa: E402


def test_a_tflite_file_picks_the_litert_engine() -> None:
    assert resolve_engine("auto", "model.tflite") == "litert"
    assert resolve_engine("tflite", "model.tflite") == "litert"
    with pytest.raises(UsageError, match="--engine litert"):
        resolve_engine("onnxruntime", "model.tflite")


def test_predictor_on_the_file_matches_torch(lite0_tflite: Path, acceptance_photos, lite0_predictor) -> None:
    predictor = Predictor(weights=str(lite0_tflite), threads=2)
    assert predictor.engine.name == "litert" and predictor.engine.arch == "efficientnet_lite0"
    for name in ("chelsea", "coffee"):
        ours, reference = predictor(acceptance_photos[name]), lite0_predictor(acceptance_photos[name])
        assert [p.index for p in ours[:3]] == [p.index for p in reference[:3]]


def test_engine_takes_a_batch(lite0_tflite: Path) -> None:
    engine = open_engine("litert", None, str(lite0_tflite))
    batch = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    logits = engine(batch)
    assert logits.shape == (3, 1000)
    assert np.allclose(logits[1], engine(batch[1:2])[0], atol=1e-5)


def test_refused_options_and_files(lite0_tflite: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="holds efficientnet_lite0"):
        open_engine("litert", "efficientnet_b0", str(lite0_tflite))
    with pytest.raises(UsageError, match="fixed size"):
        open_engine("litert", None, str(lite0_tflite), preprocessing={"size": 256})
    with pytest.raises(UsageError, match="CPU only"):
        open_engine("litert", None, str(lite0_tflite), device="cuda")
    fake = tmp_path / "fake.tflite"
    fake.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(TfliteModelError, match="not a TFLite model"):
        open_engine("litert", None, str(fake))
