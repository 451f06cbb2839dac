"""Memory ``set_grad_checkpointing(True)`` saves in training, and what it costs in speed.

EfficientNet-B0 at 224x224, batch 16 (and any ``--models``), one process per row so each peak
is its own. Two measures per row: the peak resident memory (RSS) a training step adds on top
of the loaded model, and the peak of the bytes torch's CPU allocator holds during a step
(``torch.profiler`` with ``profile_memory``: the sum of live tensor allocations, independent
of the malloc's caching). The ratio column compares with the same model without
checkpointing, in the same run.

    python benchmarks/train_memory.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effnet._malloc import tune_malloc  # noqa: E402


def live_tensor_peak(profile) -> int:  # noqa: ANN001 - torch.profiler.profile
    """Highest sum of live CPU tensor bytes, replaying each op's own allocations and frees."""
    events = sorted((e for e in profile.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    live = peak = 0
    for event in events:
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def measure(model_name: str, checkpointing: bool, batch: int, size: int, threads: int, steps: int) -> dict[str, float]:
    tune_malloc()
    import torch
    from torch.profiler import ProfilerActivity, profile

    from effnet.models.network import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model(model_name).to(memory_format=torch.channels_last).train()
    model.set_grad_checkpointing(checkpointing)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (batch,))

    def step() -> None:
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # optimizer state and oneDNN primitives exist from here on
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - started) / steps
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"step_s": seconds, "peak_rss_mb": peak / 1024, "step_rss_mb": (peak - rss_before) / 1024,
            "tensor_peak_mb": live_tensor_peak(prof) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="efficientnet_b0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per row")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "CHECKPOINTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        name, flag = args.one
        print(json.dumps(measure(name, flag == "1", args.batch_size, args.size, args.threads, args.steps)))
        return

    from effnet.tasks.bench.machine import header_lines, machine_info

    print("\n".join(header_lines(machine_info())))
    print(f"training step, {args.size}x{args.size}, batch {args.batch_size}, channels_last fp32, "
          f"{args.threads} threads\n")
    print(f"{'model':<20}{'grad ckpt':>10}{'step s':>9}{'step RSS MB':>13}{'tensor peak MB':>16}{'vs off':>8}")
    for model in args.models.split(","):
        rows = {}
        for flag in ("0", "1"):
            command = [sys.executable, __file__, "--one", model, flag, "--batch-size", str(args.batch_size),
                       "--size", str(args.size), "--threads", str(args.threads), "--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            rows[flag] = json.loads(done.stdout.strip().splitlines()[-1])
        for flag, row in rows.items():
            ratio = row["tensor_peak_mb"] / rows["0"]["tensor_peak_mb"]
            print(f"{model:<20}{'on' if flag == '1' else 'off':>10}{row['step_s']:>9.2f}{row['step_rss_mb']:>13.0f}"
                  f"{row['tensor_peak_mb']:>16.0f}{ratio:>7.2f}x")
    print("\nstep RSS: peak resident memory training adds over the loaded model (malloc caching included);"
          "\ntensor peak: the most bytes of live CPU tensors at once during one step (torch.profiler).")


if __name__ == "__main__":
    main()
