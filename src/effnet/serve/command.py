"""``effnet serve``: load the model(s), then run the HTTP app under uvicorn.

This module lives in serve/ rather than tasks/ because it imports the app, and tasks/ sits
below serve/ in the import order (a lower room never imports a higher one).
"""

from __future__ import annotations

import argparse
import copy
import ipaddress
import os
import socket
import sys
from typing import Any

from ..errors import EffnetError, UsageError
from ..runtime import BACKENDS, resolve_backend

DESCRIPTION = (
    "Serve image classification over HTTP: POST /v1/predict (multipart or raw image), a page at / to "
    "try it, /metrics for Prometheus, /docs for the API. Concurrent requests are batched together."
)
API_KEY_ENV = "EFFNET_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--model", "-m", action="append", default=None, metavar="NAME",
                       help="variant to serve, e.g. lite0, b0 (repeat to serve several; the first is the "
                            "default; default: lite0, or the architecture stored in --weights)")
    model.add_argument("--weights", "-w", default="default",
                       help="weights entry, tag or file, for a single model (default: its embedded weights)")
    model.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                       help="inference engine (default: auto = onnx for an .onnx --weights file, else torch)")
    model.add_argument("--device", default=None, help="torch device, e.g. cuda or cuda:1 (torch backend only)")
    model.add_argument("--threads", type=int, default=None, metavar="N",
                       help="CPU threads inside each forward pass (torch backend; default: torch's thread "
                            "count divided among the --workers)")
    http = parser.add_argument_group("network")
    http.add_argument("--host", default="127.0.0.1",
                      help="address to listen on (default: 127.0.0.1, this machine only); 0.0.0.0 exposes "
                           "the server to the network: use --api-key")
    http.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one (default: 8000)")
    http.add_argument("--api-key", default=None, metavar="KEY",
                      help=f"require this key (X-API-Key or Authorization: Bearer) on /v1/* and /metrics; "
                           f"prefer the {API_KEY_ENV} environment variable, which other users cannot see in ps")
    http.add_argument("--shutdown-timeout", type=float, default=30.0,
                      metavar="SECONDS",
                      help="time in-flight requests get to finish after SIGTERM/Ctrl-C (default: 30)")
    http.add_argument("--access-log", action="store_true", help="log every request (metrics count them anyway)")
    http.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                      help="server log level (default: info)")

    batching = parser.add_argument_group("batching and limits")
    batching.add_argument("--max-batch", type=int, default=16, metavar="N",
                          help="most images in one forward pass; 1 turns batching off (default: 16)")
    batching.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                          help="longest an image waits for others to join its batch (default: 5)")
    batching.add_argument("--workers", type=int, default=1, metavar="N",
                          help="forward passes that may run at once: model instances, as threads sharing the "
                               "weights (default: 1)")
    batching.add_argument("--queue-size", type=int, default=128, metavar="N",
                          help="most images admitted and waiting; beyond it requests get 503 with Retry-After "
                               "(default: 128)")
    batching.add_argument("--max-images", type=int, default=32, metavar="N", help="most images in one request (default: 32)")
    batching.add_argument("--max-body-mb", type=float, default=20.0, metavar="MB",
                          help="largest request body; 413 above it (default: 20)")
    batching.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                          help="largest image in pixels, width x height; 413 above it, which stops "
                               "decompression bombs (default: 40000000)")


def _settings(args: argparse.Namespace) -> Any:
    from .app import ServeSettings

    return ServeSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, workers=args.workers, queue_size=args.queue_size,
        max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels, max_images=args.max_images,
        api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV),
    )


def _bind(host: str, port: int) -> socket.socket:
    """Bind here, not in uvicorn, so a busy port is a one-line error and port 0 is reportable."""
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {port}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as error:
        sock.close()
        raise EffnetError(f"cannot listen on {host}:{port}: {getattr(error, 'strerror', None) or error}") from None
    return sock


def _split_threads(threads: int | None, workers: int) -> int:
    """Set torch's intra-op threads: ``threads``, or its default divided among the workers,
    so that concurrent forward passes do not oversubscribe the cores. Process-wide, which is
    right for a process that only serves."""
    import torch

    chosen = threads or max(1, torch.get_num_threads() // workers)
    torch.set_num_threads(chosen)
    return chosen


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..tasks.predict import Predictor
    from .app import create_app

    settings = _settings(args)
    args.backend = resolve_backend(args.backend, args.weights)
    names = args.model or [None]
    if len(names) > 1 and args.weights != "default":
        raise UsageError("--weights applies to a single model; serve other weights as separate servers")
    if args.shutdown_timeout < 0:
        raise UsageError("--shutdown-timeout must be 0 or more")
    options = {"device": args.device} if args.device else {}
    if (options or args.threads is not None) and args.backend != "torch":
        raise UsageError("--device and --threads apply to the torch backend only")
    if args.threads is not None and args.threads < 1:
        raise UsageError("--threads must be at least 1")
    threads = _split_threads(args.threads, settings.workers) if args.backend == "torch" else None
    sock = _bind(args.host, args.port)  # before the slow model load: a busy port fails at once
    try:
        predictors: dict[str, Predictor] = {}
        for name in names:
            what = name or (args.weights if args.weights else "the default model")
            print(f"effnet serve: loading {what} ({args.backend})", file=sys.stderr)
            predictor = Predictor(name, args.weights, backend=args.backend, **options)
            predictors.setdefault(predictor.arch, predictor)
        app = create_app(predictors, settings)
    except BaseException:
        sock.close()
        raise

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"effnet serve: http://{shown}:{port}/  (page at /, API docs at /docs, metrics at /metrics; "
          f"max batch {settings.max_batch}, max wait {settings.max_wait_ms:g} ms, {settings.workers} worker(s)"
          f"{f' x {threads} thread(s)' if threads else ''})",
          file=sys.stderr, flush=True)
    if not _is_loopback(args.host) and not settings.api_key:
        print(f"effnet serve: warning: listening on {args.host} without --api-key: anyone who can reach this "
              "machine can use the server", file=sys.stderr)
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)  # our "ready" line in uvicorn's format
    log_config["loggers"]["effnet.serve"] = {"handlers": ["default"], "level": args.log_level.upper(),
                                             "propagate": False}
    config = uvicorn.Config(
        app, log_level=args.log_level, log_config=log_config, access_log=args.access_log,
        timeout_graceful_shutdown=args.shutdown_timeout, server_header=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return 0
