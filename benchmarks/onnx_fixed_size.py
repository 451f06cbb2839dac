"""ONNX Runtime: a dynamic-size export vs the same model exported at a fixed size, one run.

A dynamic spatial size keeps TF-"same" padding right at any input size, but the pads are
computed at every call; at a fixed size that arithmetic folds away. Both files come from
`effnet export` (Lite0, its shipped weights); they are timed in interleaved rounds, one
session alive at a time.

    python benchmarks/onnx_fixed_size.py [--model lite0] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
from pathlib import Path

import numpy as np

from effnet.deploy.export.onnx import NATIVE_SIZE, export
from effnet.runtime.onnxruntime_engine import open_session
from effnet.runtime.timing import Timing, time_calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        files = {"dynamic size": export(args.model, "default", Path(folder) / "dynamic.onnx").path,
                 "fixed size": export(args.model, "default", Path(folder) / "fixed.onnx", size=NATIVE_SIZE).path}
        size = open_session(files["fixed size"]).get_inputs()[0].shape[2]
        one = np.random.default_rng(0).standard_normal((1, 3, size, size), dtype=np.float32)
        sixteen = np.repeat(one, 16, axis=0)
        times = {name: (Timing(), Timing()) for name in files}
        for _ in range(args.rounds):
            for name, path in files.items():
                session = open_session(path, threads=args.threads)
                for batch, timing, repeats in ((one, times[name][0], 30), (sixteen, times[name][1], 4)):
                    timing.extend(time_calls(lambda: session.run(None, {"input": batch}), warmup=0, budget=0,
                                             min_repeats=repeats))
                del session
                gc.collect()
    print(f"{args.model} at {size}x{size}, onnxruntime, {args.threads} threads, {args.rounds} interleaved rounds")
    print(f"{'export':<14}{'bs1 p50 ms':>12}{'bs16 p50 ms':>13}{'bs16 img/s':>12}")
    for name, (single, batched) in times.items():
        print(f"{name:<14}{1e3 * single.p50:>12.2f}{1e3 * batched.p50:>13.1f}{16 / batched.p50:>12.1f}")
    (d1, d16), (f1, f16) = ((single.p50, batched.p50) for single, batched in times.values())
    print(f"fixed size is {d1 / f1:.2f}x faster at batch 1 and {d16 / f16:.2f}x at batch 16")


if __name__ == "__main__":
    main()
