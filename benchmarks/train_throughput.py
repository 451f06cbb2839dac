"""Training throughput of effnet's loop vs efficientnet_pytorch's model in a plain fp32 loop.

EfficientNet-B0 at 224x224, batch 16, random data, SGD momentum 0.9. The baseline is
``efficientnet_pytorch`` (lukemelas) B0 trained the way a plain PyTorch script does it:
NCHW, fp32, ``torch.optim.SGD`` defaults, the system's malloc settings. The next row gives
the same baseline effnet's malloc tuning (``effnet._malloc``, applied by every ``effnet``
command), so the allocator's share of the gain is visible on its own. The effnet rows all
run with that tuning, as ``effnet train`` does, and add one setting at a time
(``train.channels_last``, the fused optimizer ``build_optimizer`` picks, ``train.amp: bf16``,
``train.compile``); the row marked "effnet train default" is what a recipe gets unless it
says otherwise. Every row runs in its own process (so peak memory is its own), rows are
interleaved over ``--rounds`` so load from other processes hits them alike, each row's rate
is the batch over its median step time, and the table reports the median over rounds with
the ratio to the baseline's.

    python benchmarks/train_throughput.py --threads 2 --rounds 2

With ``--device cuda`` the same rows run on the GPU (autocast on CUDA, each step synchronized,
peak GPU memory instead of resident memory); the fp16 row uses the gradient scaler and foreach SGD as
``effnet train`` does:

    python benchmarks/train_throughput.py --device cuda --batch-size 128 --budget 5 --rows 0,2,3,4,5,7
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from effnet._malloc import tune_malloc  # noqa: E402

#: row name -> (model, effnet malloc tuning, channels_last, optimizer implementation, amp, compile)
CANDIDATES: dict[str, tuple[str, bool, bool, str, str, bool]] = {
    "efficientnet_pytorch fp32 (baseline)": ("reference", False, False, "foreach", "none", False),
    "efficientnet_pytorch fp32 + effnet malloc": ("reference", True, False, "foreach", "none", False),
    "effnet fp32": ("effnet", True, False, "foreach", "none", False),
    "effnet channels_last": ("effnet", True, True, "foreach", "none", False),
    "effnet channels_last + fused SGD (default)": ("effnet", True, True, "fused", "none", False),
    "effnet channels_last + fused + bf16": ("effnet", True, True, "fused", "bf16", False),
    "effnet channels_last + fused + compile": ("effnet", True, True, "fused", "none", True),
    "effnet channels_last + fp16 (foreach SGD)": ("effnet", True, True, "fused", "fp16", False),
    "effnet channels_last + fused + bf16 + compile": ("effnet", True, True, "fused", "bf16", True),
}


def measure(name: str, batch: int, size: int, threads: int, budget: float, min_steps: int,
            warmup: int, device_name: str = "cpu") -> dict[str, float]:
    """One row in this process: warm up, then time steps until ``budget`` seconds have passed.

    The rate is the batch over the median step time, so a burst of load from another process
    during one step does not move it.
    """
    kind, tuned_malloc, channels_last, implementation, amp, compiled = CANDIDATES[name]
    if tuned_malloc:
        tune_malloc()
    import torch

    from effnet.models.network import build_model
    from effnet.tasks.training.config import OptimConfig
    from effnet.tasks.training.optim import build_optimizer, param_groups

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = torch.device(device_name)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    if kind == "reference":
        from efficientnet_pytorch import EfficientNet

        model = EfficientNet.from_name("efficientnet-b0")
    else:
        model = build_model("efficientnet_b0")
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format).train()
    if kind == "reference":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    else:
        optimizer = build_optimizer(param_groups(model, 1e-5), OptimConfig(name="sgd", implementation=implementation),
                                    0.01, device, grad_scaling=amp == "fp16")
    forward = torch.compile(model) if compiled else model
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=memory_format)
    labels = torch.randint(0, 1000, (batch,), device=device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")

    def step() -> None:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = criterion(forward(images), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    step()  # the first step builds oneDNN primitives (and compiles, for compile)
    first = time.perf_counter() - started
    for _ in range(warmup):
        step()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - started < budget:
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:  # the GPU's peak in the same field
        peak, rss_before = torch.cuda.max_memory_allocated() / 1024, 0
    return {"img_s": batch / statistics.median(times), "steps": len(times), "first_step_s": first,
            "peak_rss_mb": peak / 1024, "training_rss_mb": (peak - rss_before) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--budget", type=float, default=30.0, help="timed seconds per row per round")
    parser.add_argument("--min-steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", help="comma-separated row numbers to run (0 = baseline, always run; default: "
                        "rows 0-6 on the CPU, where fp16 is emulated, every row on CUDA)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batch_size, args.size, args.threads, args.budget, args.min_steps,
                                 args.warmup, args.device)))
        return

    import torch

    from effnet.tasks.bench.machine import header_lines, machine_info

    names = list(CANDIDATES)
    cuda = args.device.startswith("cuda")
    rows = args.rows or ",".join(str(i) for i in range(len(CANDIDATES) if cuda else 7))
    chosen = sorted({0, *(int(i) for i in rows.split(","))})
    print("\n".join(header_lines(machine_info())))
    where = torch.cuda.get_device_name(0) if cuda else f"{args.threads} threads"
    print(f"EfficientNet-B0 training step, {args.size}x{args.size}, batch {args.batch_size}, {where}, "
          f"torch {torch.__version__}, {args.rounds} round(s) of >= {args.budget:.0f} s per row\n")
    results: dict[str, list[dict[str, float]]] = {names[i]: [] for i in chosen}
    for round_index in range(args.rounds):
        for i in chosen:
            command = [sys.executable, __file__, "--one", names[i], "--batch-size", str(args.batch_size),
                       "--size", str(args.size), "--threads", str(args.threads), "--budget", str(args.budget),
                       "--min-steps", str(args.min_steps), "--warmup", str(args.warmup), "--device", args.device]
            with tempfile.TemporaryDirectory() as cache:
                # compile rows get their own inductor cache: the first step then includes the whole
                # compile, and a stale or half-written shared default cache cannot
                # break the row ("ImportError: ... .so: file too short" after an interrupted compile)
                env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
                done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                print(f"{names[i]}: failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results[names[i]].append(row)
            print(f"  round {round_index + 1}: {names[i]}: {row['img_s']:.2f} img/s", flush=True)
    baseline = statistics.median(r["img_s"] for r in results[names[0]])
    peak, share = ("peak GPU MB", "") if cuda else ("peak RSS MB", "train RSS MB")
    print(f"\n{'loop':<46}{'img/s':>8}{'vs baseline':>13}{'first step s':>14}{peak:>13}{share:>14}")
    for name, rows in results.items():
        if not rows:
            continue
        speed = statistics.median(r["img_s"] for r in rows)
        print(f"{name:<46}{speed:>8.2f}{speed / baseline:>12.2f}x{max(r['first_step_s'] for r in rows):>14.1f}"
              f"{max(r['peak_rss_mb'] for r in rows):>13.0f}"
              + ("" if cuda else f"{max(r['training_rss_mb'] for r in rows):>14.0f}"))
    if cuda:
        print("\npeak GPU MB: torch.cuda.max_memory_allocated over the whole row.")
    else:
        print("\ntrain RSS: peak resident memory minus the resident memory before the first step.")


if __name__ == "__main__":
    main()
