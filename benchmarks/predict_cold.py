"""What a user waits for: ``effnet predict IMAGE`` as a fresh process, wall time and peak memory.

Each run is a new ``effnet predict`` process (interpreter start, imports, model load, one image),
timed from spawn to exit, its peak RSS read from ``os.wait4``. The default engine (``auto``)
first runs once against an empty cache, which builds the fixed-size ONNX file (the one-off cost
the README mentions), then ``--repeats`` times warm, interleaved with ``--engine torch``::

    python benchmarks/predict_cold.py [--model lite0] [--repeats 5] [--image examples/images/cat.jpg]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from effnet.tasks.bench.machine import cpu_features, cpu_model

ROOT = Path(__file__).resolve().parents[1]


def one_run(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from spawn to exit and peak RSS in MB of one process; a failed run stops the script."""
    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = process.stderr.read() if process.stderr else b""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({process.returncode}): {stderr.decode(errors='replace').strip()}")
    return seconds, usage.ru_maxrss / 1024  # Linux reports kilobytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--image", default=str(ROOT / "examples/images/cat.jpg"))
    parser.add_argument("--repeats", type=int, default=5, help="warm runs per engine, interleaved")
    args = parser.parse_args()
    effnet = [sys.executable, "-m", "effnet", "predict", args.image, "--model", args.model]
    with tempfile.TemporaryDirectory(prefix="effnet-cache-") as cache:
        env = {**os.environ, "EFFNET_CACHE": cache}
        build = one_run(effnet, env)
        runs: dict[str, list[tuple[float, float]]] = {"auto (onnxruntime)": [], "torch": []}
        for _ in range(args.repeats):
            runs["auto (onnxruntime)"].append(one_run(effnet, env))
            runs["torch"].append(one_run([*effnet, "--engine", "torch"], env))
    print(f"machine: {cpu_model()} ({cpu_features()}), {os.cpu_count()} CPUs; effnet predict {Path(args.image).name} "
          f"--model {args.model}; {args.repeats} runs per engine, interleaved")
    print(f"first run, empty cache (builds the ONNX file): {build[0]:.2f} s, {build[1]:.0f} MB")
    print(f"{'engine':<20}{'wall s median':>15}{'range':>14}{'peak RSS MB':>13}")
    for name, samples in runs.items():
        walls = [wall for wall, _ in samples]
        print(f"{name:<20}{statistics.median(walls):>15.2f}{f'{min(walls):.2f}-{max(walls):.2f}':>14}"
              f"{statistics.median(rss for _, rss in samples):>13.0f}")


if __name__ == "__main__":
    main()
