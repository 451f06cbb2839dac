"""The HTTP app: ``create_app({name: Predictor}, ServeSettings())`` -> a FastAPI app.

Work per request: read the body (bounded in size and time), split it into images, decode
and preprocess them in a thread pool that serves requests in turn (Pillow, simplejpeg and
numpy release the GIL), hand the arrays to the model's ``DynamicBatcher`` (forward passes
in worker threads), then top-k. The event loop only shuffles bytes and futures, so one
process keeps many requests in flight.

Every bad input is a 4xx with a JSON body ``{"error": {"status", "code", "message"}}``, and
an unreadable image among readable ones is answered in its own place; a 5xx means a bug, a
failed model or a server stopping, never the client's data.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..errors import UsageError
from ..models.variants import canonical_name
from ..runtime.predictor import Predictor, top_k
from .batcher import DynamicBatcher, QueueFull
from .metrics import RequestMetrics, ServeMetrics
from .requests import CONNECTION_FAULTS, DecodePool, PixelBudget, ServeError, decode, images_from_request
from .schemas import (
    PREDICT_BODY,
    ErrorDetail,
    ImageResult,
    ModelInfo,
    ModelList,
    PredictionOut,
    PredictResponse,
    Timing,
    error_responses,
)

log = logging.getLogger("effnet.serve")

STATIC = Path(__file__).parent / "static"
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching knobs; the defaults suit one CPU replica.

    ``max_images`` defaults to 32, or to ``queue_size`` when that is smaller (a request must
    fit in the queue). ``max_request_pixels`` defaults to 5 x ``max_pixels`` (200 MP): more
    than a body of ordinary photos can carry (20 MB of JPEG at 0.15-0.35 bytes per pixel is
    60-130 MP), a sixth of what 32 images at the per-image limit would make a server decode.
    ``read_timeout``: seconds a client gets to send a request's headers, and again its body.
    """

    max_batch: int = 16
    max_wait_ms: float = 5.0
    instances: int = 1
    queue_size: int = 128
    max_body_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_images: int | None = None  # None: resolved in __post_init__, as said above
    max_request_pixels: int | None = None
    read_timeout: float = 60.0
    api_key: str | None = None
    preprocess_threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        if self.max_images is None:
            object.__setattr__(self, "max_images", min(32, self.queue_size))
        if self.max_request_pixels is None:
            object.__setattr__(self, "max_request_pixels", 5 * self.max_pixels)
        checks = {
            "--max-batch": self.max_batch >= 1, "--instances": self.instances >= 1,
            "--queue-size": self.queue_size >= 1, "--max-body-mb": self.max_body_bytes >= 1,
            "--max-pixels": self.max_pixels >= 1, "--max-images": self.max_images >= 1,
            "--max-request-pixels": self.max_request_pixels >= 1, "preprocess threads": self.preprocess_threads >= 1,
        }
        for option, ok in checks.items():
            if not ok:
                raise UsageError(f"{option} must be at least 1")
        if self.max_wait_ms < 0:
            raise UsageError("--max-wait-ms must be 0 or more")
        if not self.read_timeout > 0:
            raise UsageError("--read-timeout must be more than 0")
        if self.max_images > self.queue_size:
            raise UsageError(f"--max-images ({self.max_images}) cannot exceed --queue-size ({self.queue_size}): "
                             "such a request could never be admitted; lower --max-images or raise --queue-size")
        if self.api_key is not None and not self.api_key:
            raise UsageError("--api-key must not be empty")


# -- the model behind a name ----------------------------------------------------------------
@dataclass
class ModelService:
    name: str
    engine: str
    predictor: Predictor
    batcher: DynamicBatcher

    def info(self, settings: ServeSettings) -> ModelInfo:
        preprocessing = self.predictor.engine.preprocessing
        return ModelInfo(
            name=self.name, engine=self.engine, backend=self.engine, input_size=preprocessing.size,
            num_classes=self.predictor.engine.num_classes, preprocessing=preprocessing.to_dict(),
            max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, instances=settings.instances,
            workers=settings.instances, queue_size=settings.queue_size,
        )


# -- the app --------------------------------------------------------------------------------
def create_app(predictors: Mapping[str, Predictor] | Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """An app serving already-loaded predictors (the first one is the default model).

    Loading happens before the app exists, so a wrong model name or weights file stops the
    command with a one-line error instead of a server that answers 503 forever.
    """
    settings = settings or ServeSettings()
    metrics = ServeMetrics()
    server = ServerState(settings, metrics, model_services(predictors, settings, metrics),
                         DecodePool(settings.preprocess_threads))
    app = FastAPIOffline(
        title="effnet", version=__version__, lifespan=server.lifespan, redoc_url=None,
        description="EfficientNet image classification with dynamic batching. The page at / classifies "
                    "a dropped image; POST /v1/predict does the same for programs.",
    )
    app.state.settings = settings
    app.state.services = server.services
    app.state.metrics = metrics
    error_response = add_error_handlers(app, metrics)
    protected = [Depends(api_key_check(settings.api_key))] if settings.api_key else []
    add_predict_route(app, server, protected)
    add_info_routes(app, server, protected)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(LastResort, answer=error_response)
    app.add_middleware(RequestMetrics, metrics=metrics)  # outside: it counts LastResort's answers too
    return app


def model_services(predictors: Mapping[str, Predictor] | Predictor, settings: ServeSettings,
                   metrics: ServeMetrics) -> dict[str, ModelService]:
    """One batcher per served model, its queue and settings watched by the metrics."""
    if isinstance(predictors, Predictor):
        predictors = {predictors.arch: predictors}
    if not predictors:
        raise UsageError("no model to serve")
    services: dict[str, ModelService] = {}
    for name, predictor in predictors.items():
        predictor = copy.copy(predictor)  # shares the loaded engine; the pixel limit is the server's
        predictor.max_pixels = settings.max_pixels
        batcher = DynamicBatcher(
            predictor.engine, max_batch=settings.max_batch, max_wait=settings.max_wait_ms / 1000,
            instances=settings.instances, queue_size=settings.queue_size, observer=metrics.batch_observer(name),
        )
        services[name] = ModelService(name, predictor.engine.name, predictor, batcher)
        metrics.watch_queue(name, lambda b=batcher: b.depth, settings.queue_size)
        metrics.model.labels(model=name).info({
            "engine": predictor.engine.name, "input_size": str(predictor.engine.preprocessing.size),
            "max_batch": str(settings.max_batch), "max_wait_ms": str(settings.max_wait_ms),
            "instances": str(settings.instances),
        })
    return services


@dataclass
class ServerState:
    """What the routes share: the settings, the models, the decode pool, and readiness."""

    settings: ServeSettings
    metrics: ServeMetrics
    services: dict[str, ModelService]
    decoding: DecodePool
    ready: bool = False

    @property
    def default_model(self) -> str:
        return next(iter(self.services))

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self.decoding.start()
        for service in self.services.values():
            await service.batcher.start()
            await service.batcher.warm_up(service.predictor.engine.example_input())
        self.ready = True
        self.metrics.ready.set(1)
        log.info("ready: %s", ", ".join(f"{s.name} ({s.engine})" for s in self.services.values()))
        try:
            yield
        finally:
            # uvicorn calls this once open connections are done; finish what is queued anyway
            self.ready = False
            self.metrics.ready.set(0)
            for service in self.services.values():
                await service.batcher.close()
            self.decoding.shutdown()

    def resolve_model(self, name: str | None) -> ModelService:
        if name is None:
            return self.services[self.default_model]
        if name in self.services:
            return self.services[name]
        try:
            canonical = canonical_name(name)
        except UsageError:
            canonical = None
        if canonical in self.services:
            return self.services[canonical]  # type: ignore[index]
        raise ServeError(404, "unknown_model",
                         f"model '{name}' is not served here; served: {', '.join(self.services)}")

    def image_arrays(self, decoded: list[Any], budget: PixelBudget) -> dict[int, np.ndarray]:
        """The decoded images by position; per-image errors are counted (and answered in their
        place), a bug or an exceeded budget ends the request, and so does no image at all."""
        failures = [outcome for outcome in decoded if isinstance(outcome, BaseException)]
        bug = next((failure for failure in failures if not isinstance(failure, ServeError)), None)
        if bug is not None:
            raise bug  # not the client's data: a 500
        if budget.exceeded:  # the request as a whole is too much: one 413 for it
            raise next(failure for failure in failures if failure.code == "too_many_pixels_in_request")
        for failure in failures:
            self.metrics.image_errors.labels(code=failure.code).inc()
        if len(failures) == len(decoded):
            first = failures[0]
            if len(failures) == 1:
                raise first
            reasons = "; ".join(failure.message for failure in failures)
            raise ServeError(first.status, first.code, f"no image could be read: {reasons}")
        return {index: array for index, array in enumerate(decoded) if not isinstance(array, BaseException)}


def add_error_handlers(app: FastAPI, metrics: ServeMetrics) -> Callable[..., JSONResponse]:
    """Every error is JSON, one line, counted; returns the answer-maker for the middleware."""

    def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        metrics.errors.labels(code=code).inc()
        body = {"error": {"status": status, "code": code, "message": message}}
        return JSONResponse(body, status_code=status, headers=dict(headers or {}))

    @app.exception_handler(ServeError)
    async def on_serve_error(request: Request, error: ServeError) -> JSONResponse:
        if error.code in CONNECTION_FAULTS:  # the client's connection, not a server fault: a line, no traceback
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            log.info("%s: %s %s: %d %s", client, request.method, request.url.path, error.status, error.message)
        return error_response(error.status, error.code, error.message, error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return error_response(error.status_code, code, str(error.detail), error.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'request'}: {problem['msg']}"
            for problem in error.errors()
        )
        return error_response(422, "invalid_parameter", problems)

    return error_response


def api_key_check(api_key: str) -> Callable[..., None]:
    """A dependency that lets a request through only with the server's key (header or bearer)."""
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's --api-key")
    bearer_key = HTTPBearer(auto_error=False, description="Authorization: Bearer <the server's --api-key>")

    def require_key(
        key: str | None = Security(header_key),
        credentials: HTTPAuthorizationCredentials | None = Security(bearer_key),
    ) -> None:
        given = key if key is not None else (credentials.credentials if credentials else None)
        if given is None or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise ServeError(401, "unauthorized", "missing or wrong API key: send it as 'X-API-Key: KEY' or "
                             "'Authorization: Bearer KEY'", {"WWW-Authenticate": "Bearer"})

    return require_key


def add_predict_route(app: FastAPI, server: ServerState, protected: list[Any]) -> None:
    settings = server.settings

    @app.post("/v1/predict", response_model=PredictResponse, response_model_exclude_none=True,
              dependencies=protected, openapi_extra=PREDICT_BODY, summary="Classify images",
              responses=error_responses(400, 401, 404, 408, 413, 415, 422, 503),
              description="Each image is answered on its own: a result has `predictions`, or an `error` "
                          "(status, code, message) for an image that could not be read. The answer is 200 "
                          "when at least one image was classified; when none was, it is the first image's "
                          "error (4xx), with every image's reason in the message.")
    async def predict(
        request: Request,
        topk: int = Query(5, ge=1, description="classes to return per image"),
        model: str | None = Query(None, description=f"served model name or alias (default: {server.default_model})"),
    ) -> PredictResponse:
        started = time.perf_counter()
        service = server.resolve_model(model)
        num_classes = service.predictor.engine.num_classes
        if topk > num_classes:
            raise ServeError(422, "invalid_parameter", f"topk: must be between 1 and {num_classes}")
        images = await images_from_request(request, settings.max_body_bytes, settings.max_images,
                                           settings.read_timeout)
        try:
            ticket = service.batcher.admit(len(images))
        except QueueFull as full:
            raise ServeError(503, "queue_full", str(full), {"Retry-After": str(full.retry_after)}) from None
        with ticket:
            decode_started = time.perf_counter()
            budget = PixelBudget(settings.max_request_pixels)
            decoded = await server.decoding.map(functools.partial(decode, service.predictor, budget), images)
            preprocess_ms = 1000 * (time.perf_counter() - decode_started)
            arrays = server.image_arrays(decoded, budget)
            outcomes = dict(zip(arrays, await asyncio.gather(*(ticket.submit(a) for a in arrays.values()))))
        ranked = dict(zip(outcomes, top_k(np.stack([o.output for o in outcomes.values()]),
                                          service.predictor.engine.labels, topk)))
        results = []
        for index, (name, _) in enumerate(images):
            if index in outcomes:
                predictions = [PredictionOut(**asdict(p)) for p in ranked[index]]
                results.append(ImageResult(filename=name, predictions=predictions,
                                           batch_size=outcomes[index].batch_size))
            else:
                error = decoded[index]
                results.append(ImageResult(filename=name, error=ErrorDetail(
                    status=error.status, code=error.code, message=error.message)))
        timing = Timing(
            total_ms=1000 * (time.perf_counter() - started), preprocess_ms=preprocess_ms,
            queue_ms=1000 * max(o.queue_seconds for o in outcomes.values()),
            inference_ms=1000 * max(o.inference_seconds for o in outcomes.values()),
        )
        return PredictResponse(model=service.name, engine=service.engine, backend=service.engine, topk=topk,
                               results=results, timing=timing)


def add_info_routes(app: FastAPI, server: ServerState, protected: list[Any]) -> None:
    """The model list, the probes, metrics and the page."""

    @app.get("/v1/models", response_model=ModelList, dependencies=protected, responses=error_responses(401),
             summary="Served models and their settings")
    async def models() -> ModelList:
        return ModelList(default=server.default_model, models=[s.info(server.settings) for s in server.services.values()])

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded and accepting work",
             responses=error_responses(503))
    async def readyz() -> dict[str, Any]:
        if not (server.ready and all(s.batcher.running for s in server.services.values())):
            raise ServeError(503, "not_ready", "models are loading or the server is shutting down",
                             {"Retry-After": "1"})
        return {"status": "ready", "models": list(server.services)}

    @app.get("/metrics", dependencies=protected, include_in_schema=True, response_class=Response,
             summary="Prometheus metrics (text exposition format)")
    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = server.metrics.render(request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    for path, endpoint in (("/healthz", healthz), ("/readyz", readyz), ("/", page)):  # probes may use HEAD
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)


class LastResort:
    """Pure ASGI middleware: a JSON answer for a request that ends without one.

    A bug is logged once and answered 500 (Starlette's handler for ``Exception`` re-raises
    it for the server to log a second time). A request still running when
    ``--shutdown-timeout`` runs out is cancelled by uvicorn; it gets a 503 to retry
    elsewhere, instead of uvicorn's plain-text 500 and a traceback.
    """

    def __init__(self, app: ASGIApp, answer: Callable[..., JSONResponse]) -> None:
        self.app = app
        self.answer = answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            if not started:
                await self.answer(503, "shutting_down", "the server stopped before this request was done "
                                  "(--shutdown-timeout): retry", {"Retry-After": "1", "Connection": "close"}
                                  )(scope, receive, send)
        except Exception as error:
            log.error("internal error on %s %s", scope["method"], scope["path"], exc_info=error)
            if not started:
                await self.answer(500, "internal_error", f"internal error ({type(error).__name__}); see the "
                                  "server log")(scope, receive, send)
