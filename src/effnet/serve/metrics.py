"""Prometheus metrics for the server (prometheus_client, one registry per app), and the
ASGI middleware that counts every request.

A registry per app, not the global one, so that several apps in one process (tests, or a
program embedding the server) never share or clash on counters. The process collector adds
CPU, memory and open-file figures for free.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Request latency buckets (seconds): CPU inference of big variants can take several seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Every series the server exports; names follow Prometheus conventions."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter("effnet_http_requests", "HTTP requests answered, by route and status code",
                                ["method", "route", "status"], registry=r)
        self.errors = Counter("effnet_http_errors", "Error answers by reason (the JSON error code)",
                              ["code"], registry=r)
        self.latency = Histogram("effnet_http_request_duration_seconds", "Time from request to response",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.image_errors = Counter("effnet_image_errors", "Images not classified, by reason (the per-image error "
                                    "code), whether or not others in their request were", ["code"], registry=r)
        self.in_progress = Gauge("effnet_http_requests_in_progress", "Requests being handled now", registry=r)
        self.images = Counter("effnet_images", "Images classified", ["model"], registry=r)
        self.batch_size = Histogram("effnet_batch_size", "Images per forward pass", ["model"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.inference = Histogram("effnet_inference_duration_seconds", "Forward pass time per batch",
                                   ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("effnet_queue_wait_seconds", "Time an image waited for its forward pass",
                                    ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("effnet_queue_depth", "Images admitted and not yet in a forward pass",
                                 ["model"], registry=r)
        self.queue_capacity = Gauge("effnet_queue_capacity", "Most images that may wait (--queue-size)",
                                    ["model"], registry=r)
        self.ready = Gauge("effnet_ready", "1 when every model is loaded and accepting work", registry=r)
        self.model = Info("effnet_model", "A served model: architecture, engine and batching settings",
                          ["model"], registry=r)

    def watch_queue(self, model: str, depth: Callable[[], float], capacity: int) -> None:
        self.queue_depth.labels(model=model).set_function(depth)
        self.queue_capacity.labels(model=model).set(capacity)

    def batch_observer(self, model: str) -> Callable[[int, float, list[float]], None]:
        """A ``DynamicBatcher`` observer recording one model's batches."""
        images = self.images.labels(model=model)
        sizes = self.batch_size.labels(model=model)
        inference = self.inference.labels(model=model)
        waits = self.queue_wait.labels(model=model)

        def observe(size: int, seconds: float, queue_waits: list[float]) -> None:
            images.inc(size)
            sizes.observe(size)
            inference.observe(seconds)
            for wait in queue_waits:
                waits.observe(wait)

        return observe

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition and its content type, in the format the scraper's Accept asks for
        (Prometheus text 0.0.4 by default, OpenMetrics when requested)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


def route_label(scope: Scope) -> str:
    """The template of the route or mount that serves ``scope`` (``/v1/predict``, ``/static``),
    found as the app's router finds it; ``unmatched`` for a path no route serves. Templates,
    not raw paths, keep the label set small whatever clients request."""
    routes = getattr(getattr(scope.get("app"), "router", None), "routes", ())
    partial = None
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return route.path
        if match is Match.PARTIAL and partial is None:
            partial = route.path  # the path exists, the method does not (405)
    return partial or "unmatched"


class RequestMetrics:
    """Pure ASGI middleware: request counts and latency by route template, nosniff header."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        route = route_label(scope)  # before routing changes the scope (a mount's root_path)
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-content-type-options", b"nosniff")]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            self.metrics.in_progress.dec()
            self.metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
