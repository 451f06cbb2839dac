"""Reading a prediction request: the bounded body, its images (multipart or raw), and decoding.

Everything here turns a client's bytes into network inputs or into a ``ServeError`` (a 4xx
with a machine-readable code), so that the client's data never causes a 500. Decoding runs
in a ``DecodePool`` that serves requests in turn, so one request of many large images
cannot hold up the others.
"""

from __future__ import annotations

import asyncio
import io
import threading
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message

from ..data.images import ImageError
from ..runtime.predictor import Predictor

try:
    import simplejpeg
except ImportError:  # optional accelerator: Pillow reads JPEG headers too
    simplejpeg = None

#: Media types accepted as a raw (non-multipart) image body.
RAW_TYPES = ("application/octet-stream", "")
#: Status of a request whose client left before sending its body (nginx's "client closed request").
CLIENT_CLOSED = 499
#: Error codes of clients that left or stalled: an operator sees one log line for each (slow
#: networks, killed clients), never a traceback, and they are not counted as server errors.
CONNECTION_FAULTS = ("client_disconnected", "body_timeout")


class ServeError(Exception):
    """An answer other than 200, with a machine-readable ``code`` and a one-line message."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def image_error_status(error: ImageError) -> tuple[int, str]:
    """HTTP status and code for an undecodable image, from the error's kind."""
    return {"not_an_image": 415, "too_many_pixels": 413}.get(error.kind, 400), error.kind


# -- the body -------------------------------------------------------------------------------
async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, refused as soon as it is known to exceed ``limit`` bytes or to take
    longer than ``timeout`` seconds to arrive.

    A refusal before the body is read in full closes the connection (``Connection: close``):
    the unread rest cannot be told apart from a next request.
    """
    close = {"Connection": "close"}
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServeError(400, "bad_request", "Content-Length is not a number", close)
        if int(declared) > limit:
            raise ServeError(413, "body_too_large", f"request body of {int(declared):,} bytes exceeds the "
                             f"limit of {limit:,} bytes (--max-body-mb)", close)
    try:
        body = await asyncio.wait_for(_read_stream(request, limit), timeout)
    except asyncio.TimeoutError:
        raise ServeError(408, "body_timeout", f"the request body did not arrive within {timeout:g} seconds "
                         "(--read-timeout)", close) from None
    except ClientDisconnect:
        raise ServeError(CLIENT_CLOSED, "client_disconnected",
                         "the client closed the connection before sending the whole body") from None
    if not body:
        raise ServeError(400, "empty_body", "the request has no body: send an image (multipart file or raw bytes)")
    return body


async def _read_stream(request: Request, limit: int) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # chunked bodies carry no length: count as they arrive
            raise ServeError(413, "body_too_large", f"request body exceeds the limit of {limit:,} bytes "
                             "(--max-body-mb)", {"Connection": "close"})
    return bytes(body)


async def images_from_request(request: Request, max_body_bytes: int, max_images: int,
                              timeout: float) -> list[tuple[str, bytes]]:
    """The request's images as (name, encoded bytes); multipart or a raw body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not (media_type.startswith("image/") or media_type in RAW_TYPES):
        raise ServeError(415, "unsupported_media_type",
                         f"Content-Type '{media_type}' is not accepted: send multipart/form-data, image/*, "
                         "or application/octet-stream")
    body = await read_body(request, max_body_bytes, timeout)
    if media_type != "multipart/form-data":
        return [("image", body)]

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    buffered = Request(request.scope, receive=replay)
    try:
        form = await buffered.form(max_files=max_images, max_fields=max_images)
    except StarletteHTTPException as error:
        detail = str(error.detail)
        if detail.startswith("Too many"):  # Starlette's words for its max_files/max_fields limits
            raise ServeError(413, "too_many_images",
                             f"more than {max_images} images in one request (--max-images)") from None
        if detail == "Invalid multipart data.":  # Starlette's only words for any parse error
            detail = "the parts are not separated by the boundary named in the Content-Type header, or one is cut off"
        raise ServeError(400, "bad_multipart", f"malformed multipart body: {detail.rstrip('.')}") from None
    try:
        files = [(upload.filename or field_name, await upload.read())
                 for field_name, upload in form.multi_items() if isinstance(upload, UploadFile)]
    finally:
        await form.close()
    if not files:
        raise ServeError(400, "no_image", "the multipart body has no file part: attach the image as a file")
    return files


# -- decoding -------------------------------------------------------------------------------
class PixelBudget:
    """The pixels one request's images may decode together (``--max-request-pixels``).

    Decode jobs take from it in worker threads before decoding, so a request of many large
    images is refused once it crosses the budget, at the cost of at most the budget.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0
        self.exceeded = False
        self._lock = threading.Lock()

    def take(self, pixels: int) -> None:
        with self._lock:
            self.exceeded = self.exceeded or self.taken + pixels > self.limit
            if self.exceeded:
                raise ServeError(413, "too_many_pixels_in_request",
                                 f"the request's images together exceed the limit of {self.limit:,} pixels "
                                 "per request (--max-request-pixels): send fewer or smaller images")
            self.taken += pixels


def image_pixels(data: bytes) -> int:
    """Width x height from the image's header alone (no pixel data is decoded); 0 when the
    header cannot be read, so that decoding gives the precise reason."""
    if simplejpeg is not None and data.startswith(b"\xff\xd8"):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return height * width
        except ValueError:
            pass
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return image.width * image.height
    except Exception:  # any unreadable header: decoding reports it
        return 0


def decode(predictor: Predictor, budget: PixelBudget, name: str, data: bytes) -> np.ndarray:
    """Runs in the decode pool: encoded bytes -> network input, exactly as ``Predictor`` does.

    An image over the per-image limit takes nothing from the request's budget: decoding
    refuses it by itself (from its header), as its own error.
    """
    pixels = 0 if budget.exceeded else image_pixels(data)
    budget.take(pixels if pixels <= predictor.max_pixels else 0)
    try:
        return predictor.preprocess(data)
    except ImageError as error:
        status, code = image_error_status(error)
        raise ServeError(status, code, f"{name}: {error.reason}") from None


@dataclass
class _Job:
    call: Callable[[], Any]
    future: asyncio.Future[Any]


class DecodePool:
    """Decoding threads shared by every request, which take turns.

    Each request's jobs wait in the request's own queue; whenever a thread is free it takes
    the next job of the next request in round-robin order. A request alone uses every
    thread, and one that arrives while another decodes many images starts after at most
    one job of each request ahead of it, instead of after all of them.
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._turns: deque[deque[_Job]] = deque()
        self._busy = 0

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="effnet-decode")

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def map(self, function: Callable[..., Any], items: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``function(*item)`` for every item, in order; a job's exception is returned in its
        place (as ``asyncio.gather(..., return_exceptions=True)`` does)."""
        loop = asyncio.get_running_loop()
        jobs = deque(_Job(lambda item=item: function(*item), loop.create_future()) for item in items)
        futures = [job.future for job in jobs]
        self._turns.append(jobs)
        self._dispatch()
        try:
            return await asyncio.gather(*futures, return_exceptions=True)
        finally:
            jobs.clear()  # a request that was cancelled starts no more jobs

    def _dispatch(self) -> None:
        assert self._executor is not None, "start() first"
        loop = asyncio.get_running_loop()
        while self._busy < self.threads and self._turns:
            jobs = self._turns.popleft()
            if not jobs:
                continue
            job = jobs.popleft()
            if jobs:
                self._turns.append(jobs)  # its next job waits for the others' turns
            if job.future.done():
                continue
            self._busy += 1
            running = loop.run_in_executor(self._executor, job.call)
            running.add_done_callback(lambda done, job=job: self._finish(job, done))

    def _finish(self, job: _Job, done: asyncio.Future[Any]) -> None:
        self._busy -= 1
        if not job.future.done():
            if done.cancelled():
                job.future.cancel()
            elif done.exception() is not None:
                job.future.set_exception(done.exception())  # type: ignore[arg-type]
            else:
                job.future.set_result(done.result())
        if self._executor is not None:
            self._dispatch()
