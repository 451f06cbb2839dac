"""Eager torch inference under glibc malloc defaults vs effnet's setting vs tcmalloc.

Each configuration runs in its own subprocess (the allocator is fixed at process start), and
the configurations are interleaved over ``--rounds`` so that load from other processes on a
shared machine hits them alike. Per configuration it prints the median batch latency, the
minor page faults and the system (kernel) share of CPU time per batch, and the ratio to
glibc defaults measured in the same run.

    python benchmarks/malloc_bench.py --model b0 --batch-size 16 --threads 2
"""

from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Child process: optionally tune malloc, then time eager forward passes."""
    import resource
    import time

    if args.tune:
        from effnet._malloc import tune_malloc

        tune_malloc()
    import torch

    from effnet._malloc import allocator
    from effnet.models.network import build_model

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = build_model(args.model).eval()
    size = args.size or model.plan.eval_resolution
    x = torch.randn(args.batch_size, 3, size, size)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    latencies, faults, system, total = [], [], [], []
    with torch.inference_mode():
        for i in range(args.warmup + args.repeats):
            before = resource.getrusage(resource.RUSAGE_SELF)
            start = time.perf_counter()
            model(x)
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_SELF)
            if i >= args.warmup:
                latencies.append(elapsed)
                faults.append(after.ru_minflt - before.ru_minflt)
                system.append(after.ru_stime - before.ru_stime)
                total.append(after.ru_stime - before.ru_stime + after.ru_utime - before.ru_utime)
    print(json.dumps({
        "latency": latencies, "faults": faults, "system": sum(system), "cpu": sum(total),
        "allocator": allocator(),
    }))


def find_tcmalloc() -> str | None:
    for name in ("tcmalloc_minimal", "tcmalloc"):
        found = ctypes.util.find_library(name)
        if found:
            for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
                if (Path(folder) / found).exists():
                    return str(Path(folder) / found)
            return found
    return None


def configurations() -> list[tuple[str, dict[str, str], bool]]:
    """(label, extra environment, call effnet's tune_malloc) for each allocator setting."""
    configs = [
        ("glibc defaults", {"EFFNET_MALLOC": "system"}, False),
        ("glibc env MALLOC_MMAP_MAX_=0", {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}, False),
        ("effnet mallopt (CLI default)", {}, True),
    ]
    tcmalloc = find_tcmalloc()
    if tcmalloc:
        configs.append(("tcmalloc (LD_PRELOAD)", {"LD_PRELOAD": tcmalloc}, False))
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_b0")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=0, help="input size (default: the model's eval size)")
    parser.add_argument("--repeats", type=int, default=10, help="timed batches per subprocess")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="subprocesses per configuration, interleaved")
    parser.add_argument("--channels-last", action="store_true", help="NHWC like the torch backend (default NCHW eager)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tune", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    configs = configurations()
    results: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    for round_index in range(args.rounds):
        for label, extra, tune in configs:
            command = [sys.executable, __file__, "--worker", "--model", args.model, "--batch-size", str(args.batch_size),
                       "--threads", str(args.threads), "--size", str(args.size), "--repeats", str(args.repeats),
                       "--warmup", str(args.warmup)]
            command += ["--tune"] * tune + ["--channels-last"] * args.channels_last
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LD_PRELOAD"}
            env |= {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)} | extra
            out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
            results[label].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {round_index + 1}/{args.rounds} {label}: "
                  f"{statistics.median(results[label][-1]['latency']) * 1e3:.0f} ms", file=sys.stderr)

    from effnet.tasks.bench.machine import cpu_features, cpu_model

    import torch

    print(f"\n{args.model} batch {args.batch_size}, {args.threads} threads, "
          f"{'channels_last' if args.channels_last else 'NCHW'} eager, torch {torch.__version__}, "
          f"{cpu_model()} ({cpu_features()}), {os.cpu_count()} CPUs; "
          f"{args.rounds} subprocesses x {args.repeats} batches per configuration")
    header = f"{'allocator':<32}{'p50 ms':>9}{'min ms':>9}{'faults/batch':>14}{'kernel CPU':>12}{'speed-up':>10}"
    print(header)
    print("-" * len(header))
    baseline = None
    for label, runs in results.items():
        latencies = [t for run in runs for t in run["latency"]]
        faults = statistics.median(f for run in runs for f in run["faults"])
        kernel = sum(run["system"] for run in runs) / max(1e-9, sum(run["cpu"] for run in runs))
        median = statistics.median(latencies)
        baseline = baseline or median
        print(f"{label:<32}{median * 1e3:>9.1f}{min(latencies) * 1e3:>9.1f}{faults:>14,.0f}{kernel:>11.0%}"
              f"{baseline / median:>9.2f}x")
    if not find_tcmalloc():
        print("(tcmalloc not found: install libtcmalloc-minimal4 to add it to the comparison)")


if __name__ == "__main__":
    main()
