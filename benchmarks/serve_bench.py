"""Throughput and latency of ``effnet serve`` on loopback, against offline inference.

For each server mode (dynamic batching on, and off = ``--max-batch 1``) a real
``effnet serve`` process is started on 127.0.0.1 and N concurrent clients (1, 8, 32 by
default) post one JPEG per request for a fixed time. Printed beside it, measured in the
same run on the same machine:

- engine: the engine's own throughput on ready-made batches of ``--max-batch`` images
  (no decoding) with the server's thread layout (``--instances`` forward passes at once,
  ``--threads`` each), measured again just before each row so that a shared machine's load
  drifts into both sides alike: the ceiling the issue's goal is stated against;
- pipeline: decode + preprocess + forward in one process, as ``effnet predict`` does (the
  same work the server does, minus HTTP).

The clients share the CPU with the server; their CPU time is printed so that cost is seen.

    python benchmarks/serve_bench.py --model lite0 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from effnet.runtime.predictor import Predictor
from effnet.serve.command import threads_per_pass
from effnet.tasks.bench.machine import cpu_features, cpu_model

ROOT = Path(__file__).resolve().parents[1]


class Offline:
    """The engine and the whole pipeline measured in this process, with the server idle.

    ``threads``: per forward pass, as the server is given them (None: the engine's default).
    """

    def __init__(self, args: argparse.Namespace, images: list[bytes], threads: int | None) -> None:
        self.predictor = Predictor(args.model, engine=args.engine, device=args.device, threads=threads)
        self.batch = [images[i % len(images)] for i in range(args.max_batch)]
        self.ready = self.predictor.engine.collate([self.predictor.preprocess(data) for data in self.batch])
        for _ in range(3):
            self.predictor.engine(self.ready)

    def _rate(self, step, seconds: float, parallel: int = 1) -> float:
        started = time.perf_counter()

        def loop() -> int:
            done = 0
            while time.perf_counter() - started < seconds:
                step()
                done += len(self.batch)
            return done

        with ThreadPoolExecutor(parallel) as pool:
            done = sum(pool.map(lambda _: loop(), range(parallel)))
        return done / (time.perf_counter() - started)

    def engine(self, seconds: float, parallel: int = 1) -> float:
        """Images/s of forward passes on ready-made batches (no decoding), ``parallel`` at once."""
        return self._rate(lambda: self.predictor.engine(self.ready), seconds, parallel)

    def pipeline(self, seconds: float) -> float:
        """Images/s of decode + preprocess + forward, as ``effnet predict`` runs them."""
        return self._rate(lambda: self.predictor.logits(self.batch), seconds)


def start_server(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "effnet", "serve", "--port", "0", "--model", args.model,
               "--engine", args.engine, "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--instances", str(args.instances), "--queue-size", "1024", "--log-level", "warning"]
    if args.device:
        command += ["--device", args.device]
    if args.threads:
        command += ["--threads", str(args.threads)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stderr is not None
    said: list[str] = []
    while True:
        line = process.stderr.readline()
        if not line:
            raise SystemExit(f"server did not start: {' '.join(command)}\n" + "".join(said[-15:]))
        said.append(line)
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


class Connection:
    """A keep-alive HTTP/1.1 client that only writes a prepared request and reads the reply.

    A load generator on the same machine competes with the server for CPU; this one costs a
    fraction of a general client's per request (httpx spends several ms), so the numbers are
    the server's. Replies are checked for status 200 and read in full.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> "Connection":
        host, port = url.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)))

    async def post(self, request: bytes) -> None:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        body = await self.reader.readexactly(length)
        if status != b"200":
            raise SystemExit(f"request failed: {status.decode()} {body[:300]!r}")

    def close(self) -> None:
        self.writer.close()


def prepared(images: list[bytes]) -> list[bytes]:
    return [b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            + f"Content-Length: {len(data)}\r\n\r\n".encode() + data for data in images]


async def load(url: str, images: list[bytes], concurrency: int, seconds: float) -> tuple[float, list[float], float]:
    """Closed loop: each client sends its next request when the last is answered.

    Returns (requests/s, latencies in seconds, client CPU seconds per request).
    """
    requests = prepared(images)
    latencies: list[float] = []
    connections = [await Connection.open(url) for _ in range(concurrency)]

    async def client_loop(connection: Connection, offset: int, until: float, record: bool) -> None:
        i = offset
        while time.perf_counter() < until:
            sent = time.perf_counter()
            await connection.post(requests[i % len(requests)])
            if record:
                latencies.append(time.perf_counter() - sent)
            i += 1

    warmup = time.perf_counter() + min(3.0, seconds / 3)
    await asyncio.gather(*(client_loop(c, i, warmup, False) for i, c in enumerate(connections)))
    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(client_loop(c, i, started + seconds, True) for i, c in enumerate(connections)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    for connection in connections:
        connection.close()
    return len(latencies) / elapsed, latencies, cpu / max(len(latencies), 1)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--engine", default="auto", help="server --engine (default: auto, as effnet serve)")
    parser.add_argument("--device", default=None, help="server --device (e.g. cuda)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per point (after warm-up)")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--instances", type=int, default=1, help="server --instances (default: the server's, 1)")
    parser.add_argument("--threads", type=int, default=None,
                        help="server --threads (default: the server's: the engine's own, or with several "
                             "--instances the usable cores divided among them)")
    parser.add_argument("--modes", nargs="+", choices=("batching", "unbatched"), default=["batching", "unbatched"],
                        help="server modes to measure: batching (--max-batch) and unbatched (--max-batch 1)")
    parser.add_argument("--images", nargs="+", type=Path,
                        default=sorted((ROOT / "examples/images").glob("*.jpg")))
    args = parser.parse_args()
    images = [path.read_bytes() for path in args.images]

    print(f"machine: {cpu_model()} ({cpu_features()}), {os.cpu_count()} cores; "
          f"python {platform.python_version()}; model {args.model}, engine {args.engine}"
          f"{', device ' + args.device if args.device else ''}")
    default = Offline(args, images, threads=None)
    default_rate = default.engine(args.seconds)
    pipeline_rate = default.pipeline(args.seconds)
    print(f"offline, batch {args.max_batch}, default threads: engine {default_rate:.1f} img/s, "
          f"decode+preprocess+forward {pipeline_rate:.1f} img/s")
    threads = threads_per_pass(args.threads, args.instances)
    reference = Offline(args, images, threads)  # the server's layout
    layout = f"{args.instances} forward pass(es) at once, {threads or 'default'} thread(s) each"
    print(f"'engine': the engine offline on ready batches of {args.max_batch} with the server's layout "
          f"({layout}), measured just before each row, as the machine may be shared\n")

    header = (f"{'mode':<18} {'clients':>7} {'img/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7} "
              f"{'engine':>8} {'vs engine':>10} {'vs pipeline':>11} {'client cpu ms/req':>17}")
    print(header)
    print("-" * len(header))
    goal = None
    modes = {"batching": (f"batching (<= {args.max_batch})", args.max_batch), "unbatched": ("no batching", 1)}
    for mode, max_batch in (modes[name] for name in args.modes):
        process, url = start_server(args, max_batch)
        try:
            for concurrency in args.concurrency:
                engine_rate = reference.engine(args.seconds / 2, args.instances)
                rate, latencies, client_cpu = asyncio.run(load(url, images, concurrency, args.seconds))
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                print(f"{mode:<18} {concurrency:>7} {rate:>7.1f} {1000 * p50:>8.1f} {1000 * p99:>8.1f} "
                      f"{p99 / p50:>7.2f} {engine_rate:>8.1f} {rate / engine_rate:>9.0%} "
                      f"{rate / pipeline_rate:>10.0%} {1000 * client_cpu:>17.2f}", flush=True)
                if max_batch == args.max_batch and concurrency == max(args.concurrency):
                    goal = (rate / engine_rate, p99 / p50, concurrency)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    if goal:
        ratio, spread, concurrency = goal
        verdict = "met" if ratio >= 0.85 and spread <= 3 else "NOT met"
        print(f"\ngoal at {concurrency} clients with batching: >= 85% of engine throughput and p99 <= 3x p50: "
              f"{ratio:.0%}, p99/p50 {spread:.2f} -> {verdict}")


if __name__ == "__main__":
    main()
