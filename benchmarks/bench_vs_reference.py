"""effnet vs the reference PyTorch ports, measured in the same process and the same run.

B0: effnet eager (NCHW), effnet channels_last and effnet ONNX Runtime (when the ONNX backend
is in this build) against ``efficientnet_pytorch`` (lukemelas) eager. Lite0: the same against
``efficientnet_lite_pytorch``. Both sides use TF "same" padding, like the reference ports,
and random weights (timing does not depend on their values). Candidates are interleaved
over ``--rounds`` so load from other processes hits them alike; the ratio is the reference's
p50 latency over ours (above 1: effnet is faster).

    python benchmarks/bench_vs_reference.py --batch-sizes 1,16 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effnet._malloc import tune_malloc  # noqa: E402

REFERENCES = {
    "efficientnet_b0": ("efficientnet_pytorch", "efficientnet-b0"),
    "efficientnet_lite0": ("efficientnet_lite_pytorch", "efficientnet-lite0"),
}


def reference_module(model: str):  # noqa: ANN201 - torch module
    import importlib

    package, name = REFERENCES[model]
    return importlib.import_module(package).EfficientNet.from_name(name).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_b0,efficientnet_lite0")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=2.0, help="seconds per candidate per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    allocator = tune_malloc()
    import torch

    from effnet.models.network import build_model
    from effnet.tasks.bench import BACKENDS, BenchConfig, header_lines, machine_info, time_runner

    torch.manual_seed(0)
    machine = machine_info()
    print("\n".join(header_lines(machine)))
    onnx_missing = BACKENDS["onnx"].missing()
    ours = ["torch", "torch-cl"] + ([] if onnx_missing else ["onnx"])
    rows = []
    with torch.inference_mode():
        for model in args.models.split(","):
            reference = reference_module(model)
            mine = build_model(model, padding="tf_same").eval()
            size = mine.plan.eval_resolution
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                config = BenchConfig(batch_size=batch_size, threads=args.threads, budget=args.budget, warmup=2,
                                     min_repeats=3)
                torch.set_num_threads(args.threads)
                runners = {f"{REFERENCES[model][0]} eager": BACKENDS["torch"].prepare(reference, config, size)}
                runners |= {f"effnet {name}": BACKENDS[name].prepare(mine, config, size) for name in ours}
                samples: dict[str, list[float]] = {name: [] for name in runners}
                for _ in range(args.rounds):
                    for name, run in runners.items():
                        samples[name] += time_runner(run, config)[0]
                baseline = statistics.median(samples[next(iter(runners))])
                for name, times in samples.items():
                    p50 = statistics.median(times)
                    rows.append((model, batch_size, name, p50, batch_size / statistics.mean(times), baseline / p50))

    print(f"{args.threads} threads, input = each model's eval size, {args.rounds} interleaved rounds x "
          f"{args.budget:g} s per candidate; allocator: {allocator}")
    header = f"{'model':<20}{'batch':>6}  {'implementation':<34}{'p50 ms':>9}{'img/s':>9}{'vs reference':>14}"
    print(header)
    print("-" * len(header))
    for model, batch_size, name, p50, throughput, ratio in rows:
        print(f"{model:<20}{batch_size:>6}  {name:<34}{p50 * 1e3:>9.1f}{throughput:>9.1f}{ratio:>13.2f}x")
    if onnx_missing:
        print(f"(onnx not measured: {onnx_missing})")


if __name__ == "__main__":
    main()
