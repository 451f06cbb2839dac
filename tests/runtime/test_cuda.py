"""The CUDA paths checked against the CPU: inference in fp32 (TF32 convs), fp16 and bf16
autocast, channels_last, evaluation on a GPU, `effnet bench`'s CUDA backends (graphs, compile) and a training run
with mixed precision.

These need an NVIDIA GPU: the project's CPU machines and CI skip them; they were run on the
device machine (see docs/benchmarks.md for the command).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.cli import main
from effnet.runtime.torch_engine import TorchEngine

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

#: softmax probabilities: TF32 convolutions keep ~3 decimal digits, fp16/bf16 autocast fewer.
PROBABILITY_TOLERANCE = {None: 5e-3, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def acceptance_batch(acceptance_photos: dict[str, np.ndarray], lite0_predictor) -> np.ndarray:
    """The four acceptance photos, preprocessed for Lite0."""
    return np.stack([lite0_predictor.preprocess(image) for image in acceptance_photos.values()])


@pytest.mark.parametrize("dtype", [None, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("channels_last", [True, False], ids=["channels_last", "nchw"])
def test_real_lite0_on_cuda_agrees_with_cpu(acceptance_batch: np.ndarray, lite0_predictor,
                                             dtype: torch.dtype | None, channels_last: bool) -> None:
    expected = softmax(lite0_predictor.engine(acceptance_batch))
    gpu = TorchEngine.load("lite0", device="cuda", channels_last=channels_last)
    with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        actual = softmax(gpu(acceptance_batch))
    assert (actual.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(actual - expected).max() < PROBABILITY_TOLERANCE[dtype]


def test_eval_on_cuda_gives_the_cpu_numbers(tmp_path: Path, photo_tree, capsys: pytest.CaptureFixture[str]) -> None:
    """Pinned batches on the GPU (the engine says it runs on cuda): the same top-5 as the CPU."""
    for device in ("cpu", "cuda"):
        assert main(["eval", str(photo_tree.root), "--device", device, "--workers", "2", "--no-progress",
                     "--json", str(tmp_path / f"{device}.json")]) == 0
    cpu, cuda = (json.loads((tmp_path / f"{d}.json").read_text()) for d in ("cpu", "cuda"))
    assert [p["top5"][0] for p in cpu["predictions"]] == [p["top5"][0] for p in cuda["predictions"]]
    assert cuda["Top_1_Accuracy"] == cpu["Top_1_Accuracy"]


def test_bench_cuda_backends_run_and_report_the_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    backends = ["cuda", "cuda-fp16", "cuda-bf16", "cuda-graph"]
    code = main(["bench", "--models", "lite0,v2_b0", "--batch-sizes", "1,8", "--backends", ",".join(backends),
                 "--budget", "0.2", "--warmup", "2", "--min-repeats", "3", "--json", str(out)])
    assert code == 0
    assert "skipped" not in capsys.readouterr().out
    document = json.loads(out.read_text())
    assert document["machine"]["gpu"] == torch.cuda.get_device_name(0)
    measured = {(r["backend"], r["model"], r["batch_size"]) for r in document["results"]}
    assert measured == {(b, m, n) for b in backends for m in ("efficientnet_lite0", "efficientnetv2_b0")
                        for n in (1, 8)}
    assert all(r["p50_ms"] > 0 and r["throughput_img_s"] > 0 for r in document["results"])


def test_cuda_graph_replays_the_same_logits_as_eager() -> None:
    from effnet.tasks.bench.runners import RUNNERS

    model = TorchEngine.load("lite0").model
    torch.manual_seed(0)
    eager = RUNNERS["cuda-fp16"].prepare(model, 2, 224)()
    torch.manual_seed(0)
    replayed = RUNNERS["cuda-graph"].prepare(model, 2, 224)()
    assert torch.equal(eager.argmax(1), replayed.argmax(1))
    assert (eager.float() - replayed.float()).abs().max().item() < 1e-2
