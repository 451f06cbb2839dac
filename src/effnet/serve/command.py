"""``effnet serve``: load the model(s), then run the HTTP app under uvicorn.

This module lives in serve/ rather than tasks/ because it imports the app, and tasks/ sits
below serve/ in the import order (a lower room never imports a higher one).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from typing import Any

from ..errors import EffnetError, UsageError
from ..options import add_options
from ..runtime import resolve_engine
from ..runtime.predictor import Predictor

DESCRIPTION = (
    "Serve image classification over HTTP: POST /v1/predict (multipart or raw image), a page at / to "
    "try it, /metrics for Prometheus, /docs for the API. Concurrent requests are batched together."
)
API_KEY_ENV = "EFFNET_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_options(
        parser.add_argument_group("model"), "model", "weights", "engine", "device", "threads", "precision",
        model={"action": "append", "help": "variant to serve, e.g. lite0, b0; repeat to serve several, the first "
                                           "being the default (default: the architecture named by --weights, "
                                           "else lite0)"},
        threads={"help": "CPU threads inside one forward pass (default: the engine's own, one per core; with "
                         "--instances N, the usable cores divided among the N)"},
    )
    http = parser.add_argument_group("network")
    http.add_argument("--host", default="127.0.0.1",
                      help="address to listen on; the default admits this machine only, 0.0.0.0 exposes the "
                           "server to the network: use --api-key")
    http.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one")
    http.add_argument("--api-key", default=None, metavar="KEY",
                      help=f"require this key (X-API-Key or Authorization: Bearer) on /v1/* and /metrics; "
                           f"prefer the {API_KEY_ENV} environment variable, which other users cannot see in ps")
    http.add_argument("--shutdown-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="time in-flight requests get to finish after SIGTERM/Ctrl-C")
    http.add_argument("--access-log", action="store_true", help="log every request (metrics count them anyway)")
    http.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                      help="server log level")

    batching = parser.add_argument_group("batching and limits")
    batching.add_argument("--max-batch", type=int, default=16, metavar="N",
                          help="most images in one forward pass; 1 turns batching off")
    batching.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                          help="longest an image waits for others to join its batch")
    instances = batching.add_argument(
        "--instances", type=int, default=1, metavar="N",
        help="forward passes that may run at once: model instances, as threads sharing the weights (Triton's "
             "instance count; not eval's --workers, which are image-decoding processes)")
    # the name before 0.4.1 (README changelog), kept working; hidden, as --workers means decoders in eval
    batching.add_argument("--workers", type=int, dest=instances.dest, metavar="N",
                          default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    batching.add_argument("--queue-size", type=int, default=128, metavar="N",
                          help="most images admitted and waiting; beyond it requests get 503 with Retry-After")
    batching.add_argument("--max-images", type=int, default=None, metavar="N",
                          help="most images in one request (default: 32, or --queue-size if smaller)")
    batching.add_argument("--max-body-mb", type=float, default=20.0, metavar="MB",
                          help="largest request body; 413 above it")
    batching.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                          help="largest image in pixels, width x height; 413 above it, which stops "
                               "decompression bombs")
    batching.add_argument("--max-request-pixels", type=int, default=None, metavar="N",
                          help="most pixels all images of one request may have together; 413 above it "
                               "(default: 5 x --max-pixels)")
    batching.add_argument("--read-timeout", type=float, default=60.0, metavar="SECONDS",
                          help="time a client gets to send a request's headers, and again its body; "
                               "then 408 and the connection closes")


def _settings(args: argparse.Namespace) -> Any:
    from .app import ServeSettings

    return ServeSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, instances=args.instances, queue_size=args.queue_size,
        max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels, max_images=args.max_images,
        max_request_pixels=args.max_request_pixels, read_timeout=args.read_timeout,
        api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV),
    )


def _bind(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn, so a busy port is a one-line error and port 0 is reportable.

    The protocol is named (``IPPROTO_TCP``, not the default 0): asyncio turns Nagle's algorithm
    off (``TCP_NODELAY``) only for sockets that say they are TCP. Without it uvicorn's body
    write waited for the client's delayed ACK of the headers: every answer took 40 ms longer
    (one client: 52 ms for a request the server handled in 10 ms).
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as error:
        sock.close()
        raise EffnetError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    return sock


def threads_per_pass(threads: int | None, instances: int) -> int | None:
    """``--threads``, or with several instances the usable cores divided among them, so that
    concurrent forward passes do not oversubscribe the cores (None: the engine's default)."""
    if threads is not None or instances == 1:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // instances)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    from .app import create_app
    from .server import serve_until_stopped, server_config

    settings = _settings(args)
    engine = resolve_engine(args.engine, args.weights)
    names = args.model or [None]
    if len(names) > 1 and args.weights != "default":
        raise UsageError("--weights applies to a single model; serve other weights as separate servers")
    if args.shutdown_timeout < 0:
        raise UsageError("--shutdown-timeout must be 0 or more")
    threads = threads_per_pass(args.threads, settings.instances)
    sock = _bind(args.host, args.port)  # before the slow model load: a busy port fails at once
    try:
        predictors: dict[str, Predictor] = {}
        for name in names:
            what = name or (args.weights if args.weights else "the default model")
            print(f"effnet serve: loading {what} ({engine})", file=sys.stderr)
            predictor = Predictor(name, args.weights, engine=engine, device=args.device, threads=threads,
                                  precision=args.precision)
            predictors.setdefault(predictor.arch, predictor)
        app = create_app(predictors, settings)
    except BaseException:
        sock.close()
        raise

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"effnet serve: http://{shown}:{port}/  (page at /, API docs at /docs, metrics at /metrics; "
          f"max batch {settings.max_batch}, max wait {settings.max_wait_ms:g} ms, {settings.instances} instance(s)"
          f"{f' x {threads} thread(s)' if threads else ''})",
          file=sys.stderr, flush=True)
    if not _is_loopback(args.host) and not settings.api_key:
        print(f"effnet serve: warning: listening on {args.host} without --api-key: anyone who can reach this "
              "machine can use the server", file=sys.stderr)
    config = server_config(app, log_level=args.log_level, access_log=args.access_log,
                           shutdown_timeout=args.shutdown_timeout)
    serve_until_stopped(config, sock)
    return 0
