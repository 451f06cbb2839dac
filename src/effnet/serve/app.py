"""The HTTP app: ``create_app({name: Predictor}, ServeSettings())`` -> a FastAPI app.

Work per request: read the body (bounded), split it into images, decode and preprocess
them in a thread pool (Pillow, simplejpeg and numpy release the GIL), hand the arrays to
the model's ``DynamicBatcher`` (forward passes in worker threads), then top-k. The event
loop only shuffles bytes and futures, so one process keeps many requests in flight.

Every bad input is a 4xx with a JSON body ``{"error": {"status", "code", "message"}}``;
a 5xx means a bug or a failed model, never the client's data.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
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
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..data.images import ImageError
from ..errors import UsageError
from ..models.variants import canonical_name
from ..tasks.predict import Predictor, top_k
from .batcher import DynamicBatcher, QueueFull
from .metrics import ServeMetrics

log = logging.getLogger("effnet.serve")

STATIC = Path(__file__).parent / "static"
#: Media types accepted as a raw (non-multipart) image body.
RAW_TYPES = ("application/octet-stream", "")
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching knobs; the defaults suit one CPU replica."""

    max_batch: int = 16
    max_wait_ms: float = 5.0
    workers: int = 1
    queue_size: int = 128
    max_body_bytes: int = 20 * 2**20
    max_pixels: int = 40_000_000
    max_images: int = 32
    api_key: str | None = None
    preprocess_threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        checks = {
            "--max-batch": self.max_batch >= 1, "--workers": self.workers >= 1,
            "--queue-size": self.queue_size >= 1, "--max-body-mb": self.max_body_bytes >= 1,
            "--max-pixels": self.max_pixels >= 1, "--max-images": self.max_images >= 1,
            "preprocess threads": self.preprocess_threads >= 1,
        }
        for option, ok in checks.items():
            if not ok:
                raise UsageError(f"{option} must be at least 1")
        if self.max_wait_ms < 0:
            raise UsageError("--max-wait-ms must be 0 or more")
        if self.max_images > self.queue_size:
            raise UsageError(f"--max-images ({self.max_images}) cannot exceed --queue-size ({self.queue_size})")
        if self.api_key is not None and not self.api_key:
            raise UsageError("--api-key must not be empty")


class ServeError(Exception):
    """An answer other than 200, with a machine-readable ``code`` and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


# -- response schemas (they are also the OpenAPI docs) ---------------------------------------
class PredictionOut(BaseModel):
    index: int = Field(description="class index in the model's output")
    label: str = Field(description="class name")
    probability: float = Field(description="softmax probability, 0-1")


class ImageResult(BaseModel):
    filename: str = Field(description="the multipart file name, or 'image' for a raw body")
    predictions: list[PredictionOut]
    batch_size: int = Field(description="images in the forward pass that served this one")


class Timing(BaseModel):
    total_ms: float = Field(description="from the request's arrival to the answer")
    preprocess_ms: float = Field(description="decoding and preprocessing (images in parallel)")
    queue_ms: float = Field(description="longest wait of this request's images for a forward pass")
    inference_ms: float = Field(description="longest forward pass that served this request")


class PredictResponse(BaseModel):
    model: str
    backend: str
    topk: int
    results: list[ImageResult]
    timing: Timing


class ModelInfo(BaseModel):
    name: str
    backend: str
    input_size: int
    num_classes: int
    preprocessing: dict[str, Any]
    max_batch: int
    max_wait_ms: float
    workers: int
    queue_size: int


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class ErrorDetail(BaseModel):
    status: int
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in statuses}


PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "description": "One or several images as multipart files (any field name), or one image "
                       "as the raw body (Content-Type image/* or application/octet-stream).",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


# -- the model behind a name ----------------------------------------------------------------
@dataclass
class ModelService:
    name: str
    backend: str
    predictor: Predictor
    batcher: DynamicBatcher

    def info(self, settings: ServeSettings) -> ModelInfo:
        preprocessing = self.predictor.backend.preprocessing
        return ModelInfo(
            name=self.name, backend=self.backend, input_size=preprocessing.size,
            num_classes=self.predictor.backend.num_classes, preprocessing=preprocessing.to_dict(),
            max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, workers=settings.workers,
            queue_size=settings.queue_size,
        )


def image_error_status(error: ImageError) -> tuple[int, str]:
    """HTTP status and code for an undecodable image, from the error's kind."""
    return {"not_an_image": 415, "too_many_pixels": 413}.get(error.kind, 400), error.kind


# -- request body ---------------------------------------------------------------------------
async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServeError(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise ServeError(413, "body_too_large", f"request body of {int(declared):,} bytes exceeds the "
                             f"limit of {limit:,} bytes (--max-body-mb)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # chunked bodies carry no length: count as they arrive
            raise ServeError(413, "body_too_large", f"request body exceeds the limit of {limit:,} bytes "
                             "(--max-body-mb)")
    if not body:
        raise ServeError(400, "empty_body", "the request has no body: send an image (multipart file or raw bytes)")
    return bytes(body)


async def _images_from_request(request: Request, settings: ServeSettings) -> list[tuple[str, bytes]]:
    """The request's images as (name, encoded bytes); multipart or a raw body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not (media_type.startswith("image/") or media_type in RAW_TYPES):
        raise ServeError(415, "unsupported_media_type",
                         f"Content-Type '{media_type}' is not accepted: send multipart/form-data, image/*, "
                         "or application/octet-stream")
    body = await _read_body(request, settings.max_body_bytes)
    if media_type != "multipart/form-data":
        return [("image", body)]

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    buffered = Request(request.scope, receive=replay)
    try:
        form = await buffered.form(max_files=settings.max_images, max_fields=settings.max_images)
    except StarletteHTTPException as error:  # Starlette says "Too many files..." for its limits
        raise ServeError(413 if "many" in str(error.detail).lower() else 400, "bad_multipart",
                         f"multipart body rejected: {error.detail} (at most {settings.max_images} images "
                         "per request)") from None
    try:
        files = [(upload.filename or field_name, await upload.read())
                 for field_name, upload in form.multi_items() if isinstance(upload, UploadFile)]
    finally:
        await form.close()
    if not files:
        raise ServeError(400, "no_image", "the multipart body has no file part: attach the image as a file")
    return files


# -- the app --------------------------------------------------------------------------------
def create_app(predictors: Mapping[str, Predictor] | Predictor, settings: ServeSettings | None = None) -> FastAPI:
    """An app serving already-loaded predictors (the first one is the default model).

    Loading happens before the app exists, so a wrong model name or weights file stops the
    command with a one-line error instead of a server that answers 503 forever.
    """
    settings = settings or ServeSettings()
    if isinstance(predictors, Predictor):
        predictors = {predictors.arch: predictors}
    if not predictors:
        raise UsageError("no model to serve")
    metrics = ServeMetrics()
    services: dict[str, ModelService] = {}
    for name, predictor in predictors.items():
        predictor = copy.copy(predictor)  # shares the loaded backend; the pixel limit is the server's
        predictor.max_pixels = settings.max_pixels
        batcher = DynamicBatcher(
            predictor.backend, max_batch=settings.max_batch, max_wait=settings.max_wait_ms / 1000,
            workers=settings.workers, queue_size=settings.queue_size, observer=metrics.batch_observer(name),
        )
        services[name] = ModelService(name, predictor.backend.name, predictor, batcher)
        metrics.watch_queue(name, lambda b=batcher: b.depth, settings.queue_size)
        metrics.model.labels(model=name).info({
            "backend": predictor.backend.name, "input_size": str(predictor.backend.preprocessing.size),
            "max_batch": str(settings.max_batch), "max_wait_ms": str(settings.max_wait_ms),
            "workers": str(settings.workers),
        })
    default_model = next(iter(services))
    state: dict[str, Any] = {"ready": False, "pool": None}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = state["pool"] = ThreadPoolExecutor(settings.preprocess_threads, thread_name_prefix="effnet-decode")
        for service in services.values():
            await service.batcher.start()
            await service.batcher.warm_up(service.predictor.backend.example_input())
        state["ready"] = True
        metrics.ready.set(1)
        log.info("ready: %s", ", ".join(f"{s.name} ({s.backend})" for s in services.values()))
        try:
            yield
        finally:
            # uvicorn calls this once open connections are done; finish what is queued anyway
            state["ready"] = False
            metrics.ready.set(0)
            for service in services.values():
                await service.batcher.close()
            pool.shutdown(wait=True)

    app = FastAPIOffline(
        title="effnet", version=__version__, lifespan=lifespan, redoc_url=None,
        description="EfficientNet image classification with dynamic batching. The page at / classifies "
                    "a dropped image; POST /v1/predict does the same for programs.",
    )
    app.state.settings = settings
    app.state.services = services
    app.state.metrics = metrics

    # -- errors: always JSON, one line, counted --------------------------------------------
    def error_response(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
        metrics.errors.labels(code=code).inc()
        body = {"error": {"status": status, "code": code, "message": message}}
        return JSONResponse(body, status_code=status, headers=dict(headers or {}))

    @app.exception_handler(ServeError)
    async def on_serve_error(request: Request, error: ServeError) -> JSONResponse:
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

    @app.exception_handler(Exception)
    async def on_bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"internal error ({type(error).__name__}); see the server log")

    # -- security ---------------------------------------------------------------------------
    header_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's --api-key")
    bearer_key = HTTPBearer(auto_error=False, description="Authorization: Bearer <the server's --api-key>")

    def require_key(
        key: str | None = Security(header_key),
        credentials: HTTPAuthorizationCredentials | None = Security(bearer_key),
    ) -> None:
        assert settings.api_key is not None
        given = key if key is not None else (credentials.credentials if credentials else None)
        if given is None or not hmac.compare_digest(given.encode(), settings.api_key.encode()):
            raise ServeError(401, "unauthorized", "missing or wrong API key: send it as 'X-API-Key: KEY' or "
                             "'Authorization: Bearer KEY'", {"WWW-Authenticate": "Bearer"})

    protected = [Depends(require_key)] if settings.api_key else []

    # -- routes -----------------------------------------------------------------------------
    def resolve_model(name: str | None) -> ModelService:
        if name is None:
            return services[default_model]
        if name in services:
            return services[name]
        try:
            canonical = canonical_name(name)
        except UsageError:
            canonical = None
        if canonical in services:
            return services[canonical]  # type: ignore[index]
        raise ServeError(404, "unknown_model", f"model '{name}' is not served here; served: {', '.join(services)}")

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=protected, openapi_extra=PREDICT_BODY,
              responses=_error_responses(400, 401, 404, 413, 415, 422, 503), summary="Classify images")
    async def predict(
        request: Request,
        topk: int = Query(5, ge=1, description="classes to return per image"),
        model: str | None = Query(None, description=f"served model name or alias (default: {default_model})"),
    ) -> PredictResponse:
        started = time.perf_counter()
        service = resolve_model(model)
        num_classes = service.predictor.backend.num_classes
        if topk > num_classes:
            raise ServeError(422, "invalid_parameter", f"topk: must be between 1 and {num_classes}")
        images = await _images_from_request(request, settings)  # at most --max-images
        loop = asyncio.get_running_loop()
        try:
            ticket = service.batcher.admit(len(images))
        except QueueFull as full:
            raise ServeError(503, "queue_full", str(full), {"Retry-After": str(full.retry_after)}) from None
        with ticket:
            decode_started = time.perf_counter()
            arrays = await asyncio.gather(*(loop.run_in_executor(state["pool"], _decode, service.predictor, name, data)
                                            for name, data in images))
            preprocess_ms = 1000 * (time.perf_counter() - decode_started)
            outcomes = await asyncio.gather(*(ticket.submit(array) for array in arrays))
        outputs = np.stack([outcome.output for outcome in outcomes])
        ranked = top_k(outputs, service.predictor.backend.labels, topk)
        results = [
            ImageResult(filename=name, batch_size=outcome.batch_size,
                        predictions=[PredictionOut(**asdict(p)) for p in predictions])
            for (name, _), outcome, predictions in zip(images, outcomes, ranked)
        ]
        timing = Timing(
            total_ms=1000 * (time.perf_counter() - started), preprocess_ms=preprocess_ms,
            queue_ms=1000 * max(o.queue_seconds for o in outcomes),
            inference_ms=1000 * max(o.inference_seconds for o in outcomes),
        )
        return PredictResponse(model=service.name, backend=service.backend, topk=topk, results=results, timing=timing)

    @app.get("/v1/models", response_model=ModelList, dependencies=protected, responses=_error_responses(401),
             summary="Served models and their settings")
    async def models() -> ModelList:
        return ModelList(default=default_model, models=[s.info(settings) for s in services.values()])

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded and accepting work",
             responses=_error_responses(503))
    async def readyz() -> dict[str, Any]:
        if not (state["ready"] and all(s.batcher.running for s in services.values())):
            raise ServeError(503, "not_ready", "models are loading or the server is shutting down",
                             {"Retry-After": "1"})
        return {"status": "ready", "models": list(services)}

    @app.get("/metrics", dependencies=protected, include_in_schema=True, response_class=Response,
             summary="Prometheus metrics (text exposition format)")
    async def metrics_endpoint(request: Request) -> Response:
        body, content_type = metrics.render(request.headers.get("accept", ""))
        return Response(body, headers={"Content-Type": content_type})

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_Instrumentation, metrics=metrics)
    return app


def _decode(predictor: Predictor, name: str, data: bytes) -> np.ndarray:
    """Runs in the decode pool: encoded bytes -> network input, exactly as ``Predictor`` does."""
    try:
        return predictor.preprocess(data)
    except ImageError as error:
        status, code = image_error_status(error)
        raise ServeError(status, code, f"{name}: {error.reason}") from None


class _Instrumentation:
    """Pure ASGI middleware: request counts and latency by route template, nosniff header.

    Route templates (not raw paths) keep the label set small whatever clients request.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
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
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(method=scope["method"], route=route, status=str(status)).inc()
            self.metrics.latency.labels(route=route).observe(time.perf_counter() - started)
