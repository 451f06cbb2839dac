"""Throughput and latency of ``effnet serve`` on loopback, against offline inference.

For each server mode (dynamic batching on, and off = ``--max-batch 1``) a real
``effnet serve`` process is started on 127.0.0.1 and N concurrent clients (1, 8, 32 by
default) post one JPEG per request for a fixed time. Printed beside it, measured in the
same run on the same machine:

- backend: the backend's own throughput on ready-made batches of ``--max-batch`` images
  (no decoding), measured again just before each row so that a shared machine's load
  drifts into both sides alike: the ceiling the issue's goal is stated against;
- pipeline: decode + preprocess + forward in one process, as ``effnet predict`` does (the
  same work the server does, minus HTTP).

The clients share the CPU with the server; their CPU time is printed so that cost is seen.

    flock /work/heavy.lock python benchmarks/serve_bench.py --model lite0 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


class Offline:
    """The backend and the whole pipeline measured in this process, with the server idle."""

    def __init__(self, args: argparse.Namespace, images: list[bytes]) -> None:
        from effnet.tasks.predict import Predictor

        options = {"device": args.device} if args.device else {}
        self.predictor = Predictor(args.model, backend=args.backend, **options)
        self.batch = [images[i % len(images)] for i in range(args.max_batch)]
        self.ready = np.stack([self.predictor.preprocess(data) for data in self.batch])
        for _ in range(3):
            self.predictor.backend(self.ready)

    def _rate(self, step, seconds: float) -> float:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            step()
            done += len(self.batch)
        return done / (time.perf_counter() - started)

    def backend(self, seconds: float) -> float:
        """Images/s of forward passes on ready-made batches (no decoding)."""
        return self._rate(lambda: self.predictor.backend(self.ready), seconds)

    def pipeline(self, seconds: float) -> float:
        """Images/s of decode + preprocess + forward, as ``effnet predict`` runs them."""
        return self._rate(lambda: self.predictor.logits(self.batch), seconds)


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "effnet", "serve", "--port", "0", "--model", args.model,
               "--backend", args.backend, "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--workers", str(args.workers), "--queue-size", "1024", "--log-level", "warning"]
    if args.device:
        command += ["--device", args.device]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stderr is not None
    while True:
        line = process.stderr.readline()
        if not line:
            raise SystemExit(f"server did not start: {' '.join(command)}")
        found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if found:
            url = found.group(1)
            break
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return process, url
        except httpx.ConnectError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("server never became ready")
        time.sleep(0.1)


async def load(url: str, images: list[bytes], concurrency: int, seconds: float) -> tuple[float, list[float], float]:
    """Closed loop: each client sends its next request when the last is answered.

    Returns (requests/s, latencies in seconds, client CPU seconds per request).
    """
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:
        async def client_loop(offset: int, until: float, record: bool) -> None:
            i = offset
            while time.perf_counter() < until:
                sent = time.perf_counter()
                reply = await client.post("/v1/predict", content=images[i % len(images)],
                                          headers={"Content-Type": "image/jpeg"})
                if reply.status_code != 200:
                    raise SystemExit(f"request failed: {reply.status_code} {reply.text}")
                if record:
                    latencies.append(time.perf_counter() - sent)
                i += 1

        warmup = time.perf_counter() + min(3.0, seconds / 3)
        await asyncio.gather(*(client_loop(c, warmup, False) for c in range(concurrency)))
        cpu, started = time.process_time(), time.perf_counter()
        await asyncio.gather(*(client_loop(c, started + seconds, True) for c in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    return len(latencies) / elapsed, latencies, cpu / max(len(latencies), 1)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default=None, help="torch device (e.g. cuda)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per point (after warm-up)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--images", nargs="+", type=Path,
                        default=sorted((ROOT / "examples/images").glob("*.jpg")))
    args = parser.parse_args()
    images = [path.read_bytes() for path in args.images]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}; model {args.model}, backend {args.backend}"
          f"{', device ' + args.device if args.device else ''}")
    reference = Offline(args, images)
    pipeline_rate = reference.pipeline(args.seconds)
    print(f"offline decode+preprocess+forward, batch {args.max_batch}: {pipeline_rate:.1f} img/s")
    print("'backend' is the backend's offline rate on ready batches of the same size, measured just before "
          "each row (the machine may be shared)\n")

    header = (f"{'mode':<18} {'clients':>7} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7} "
              f"{'backend':>8} {'vs backend':>10} {'vs pipeline':>11} {'client cpu ms/req':>17}")
    print(header)
    print("-" * len(header))
    goal = None
    for mode, max_batch in ((f"batching (<= {args.max_batch})", args.max_batch), ("no batching", 1)):
        process, url = start_server(args, max_batch)
        try:
            for concurrency in args.concurrency:
                backend_rate = reference.backend(args.seconds / 2)
                rate, latencies, client_cpu = asyncio.run(load(url, images, concurrency, args.seconds))
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                print(f"{mode:<18} {concurrency:>7} {rate:>7.1f} {1000 * p50:>8.1f} {1000 * p99:>8.1f} "
                      f"{p99 / p50:>7.2f} {backend_rate:>8.1f} {rate / backend_rate:>9.0%} "
                      f"{rate / pipeline_rate:>10.0%} {1000 * client_cpu:>17.2f}", flush=True)
                if max_batch == args.max_batch and concurrency == max(args.concurrency):
                    goal = (rate / backend_rate, p99 / p50, concurrency)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    if goal:
        ratio, spread, concurrency = goal
        verdict = "met" if ratio >= 0.85 and spread <= 3 else "NOT met"
        print(f"\ngoal at {concurrency} clients with batching: >= 85% of backend throughput and p99 <= 3x p50: "
              f"{ratio:.0%}, p99/p50 {spread:.2f} -> {verdict}")


if __name__ == "__main__":
    main()
