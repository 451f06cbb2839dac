"""Runners: every name users know, over the engine layer, leaving the loaded module alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.errors import UsageError
from effnet.runtime import ENGINES
from effnet.runtime.onnx_metadata import read_metadata
from effnet.tasks.bench.runners import ONNX_EXPORT, RUNNERS, InputFiles, canonical_runners, check_runners, load_network

#: the runner names of effnet 0.1 (docs/benchmarks.md), which scripts and notes use
KNOWN = ["reference", "torch", "torch-cl", "torch-compile", "onnx", "onnx-int8", "openvino", "openvino-bf16",
         "openvino-int8", "litert", "litert-int8", "executorch", "cuda", "cuda-fp16", "cuda-bf16", "cuda-graph", "cuda-compile"]


def test_every_known_name_is_a_runner_over_a_registered_engine() -> None:
    assert list(RUNNERS) == KNOWN
    assert all(r.engine in ENGINES for r in RUNNERS.values() if r.name != "reference")
    assert canonical_runners(["onnxruntime", "ort", "torch"]) == ["onnx", "onnx", "torch"]
    with pytest.raises(UsageError, match="unknown backend.*tensorrt"):
        canonical_runners(["tensorrt"])


def test_missing_comes_from_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(ENGINES["onnxruntime"]), "missing",
                        lambda spec: "onnxruntime not installed" if spec.name == "onnxruntime" else None)
    reasons = check_runners(["torch", "onnx", "onnx-int8"])
    assert reasons == {"onnx": "onnxruntime not installed", "onnx-int8": "onnxruntime not installed"}


def test_runners_leave_the_loaded_module_alone() -> None:
    """Timing channels_last must not convert the module the NCHW runner uses next."""
    module = load_network("efficientnet_lite0")
    logits = RUNNERS["torch-cl"].prepare(module, 2, 64)()
    assert module.conv_stem.weight.is_contiguous()
    assert not module.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = module(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(logits, expected, atol=1e-4)  # the same network on the same seeded batch


def test_onnx_files_carry_full_metadata_and_are_made_once(tmp_path: Path) -> None:
    module = load_network("efficientnet_lite0")
    files = InputFiles(tmp_path)
    path = files.path(ONNX_EXPORT, module, 64)
    assert files.path(ONNX_EXPORT, module, 64) == path and list(tmp_path.iterdir()) == [path]
    metadata = read_metadata(path)
    assert metadata["arch"] == "efficientnet_lite0" and metadata["weights"] == module.pretrained_cfg.name
    assert metadata["padding"] == "tf_same" and metadata["preprocessing"]["size"] == 64
    forward = RUNNERS["onnx"].prepare(module, 2, 64, threads=1, files=files)
    with torch.inference_mode():
        expected = module(torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 64, 64),
                                                                                   dtype=np.float32))).numpy()
    assert np.abs(forward() - expected).max() < 1e-3
    engine = RUNNERS["onnx"].file_engine(module, 64, 1, files)
    # bench keeps many sessions alive: an idle one's spinning threads slowed the next row
    assert engine.session.get_session_options().get_session_config_entry("session.force_spinning_stop") == "1"


def test_openvino_runs_the_same_export_as_onnxruntime_in_fp32(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    module = load_network("efficientnet_lite0")
    files = InputFiles(tmp_path)
    onnx_forward = RUNNERS["onnx"].prepare(module, 2, 64, threads=1, files=files)
    openvino_forward = RUNNERS["openvino"].prepare(module, 2, 64, threads=1, files=files)
    assert len(list(tmp_path.iterdir())) == 1  # one export serves both engines
    np.testing.assert_allclose(openvino_forward(), onnx_forward(), atol=1e-4)


@pytest.mark.parametrize(("runner", "package"), [("litert", "litert_torch"), ("executorch", "executorch")])
def test_batch_one_file_rows_time_their_export_with_torch_answers(tmp_path: Path, runner: str, package: str) -> None:
    """The litert and executorch rows run the file `effnet export --format tflite|executorch`
    writes, at the weights' own size (those files are fixed-size): the same logits as the onnx
    row's export, batch of 2 (run image by image)."""
    pytest.importorskip(package)
    module = load_network("efficientnet_lite0")
    files = InputFiles(tmp_path)
    size = module.plan.eval_resolution
    file_forward = RUNNERS[runner].prepare(module, 2, size, threads=1, files=files)
    onnx_forward = RUNNERS["onnx"].prepare(module, 2, size, threads=1, files=files)
    np.testing.assert_allclose(file_forward(), onnx_forward(), atol=1e-3)
    with pytest.raises(UsageError, match="weights' own size"):
        RUNNERS[runner].prepare(module, 1, 64, files=files)
