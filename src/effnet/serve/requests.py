"""Reading a prediction request: the bounded body, its images (multipart or raw), and decoding.

Everything here turns a client's bytes into network inputs or into a ``ServeError`` (a 4xx
with a machine-readable code), so that the client's data never causes a 500.
"""

from __future__ import annotations

import numpy as np
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from ..data.images import ImageError
from ..runtime.predictor import Predictor

#: Media types accepted as a raw (non-multipart) image body.
RAW_TYPES = ("application/octet-stream", "")


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


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused as soon as it is known to exceed ``limit`` bytes."""
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


async def images_from_request(request: Request, max_body_bytes: int, max_images: int) -> list[tuple[str, bytes]]:
    """The request's images as (name, encoded bytes); multipart or a raw body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "multipart/form-data" and not (media_type.startswith("image/") or media_type in RAW_TYPES):
        raise ServeError(415, "unsupported_media_type",
                         f"Content-Type '{media_type}' is not accepted: send multipart/form-data, image/*, "
                         "or application/octet-stream")
    body = await read_body(request, max_body_bytes)
    if media_type != "multipart/form-data":
        return [("image", body)]

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    buffered = Request(request.scope, receive=replay)
    try:
        form = await buffered.form(max_files=max_images, max_fields=max_images)
    except StarletteHTTPException as error:  # Starlette says "Too many files..." for its limits
        raise ServeError(413 if "many" in str(error.detail).lower() else 400, "bad_multipart",
                         f"multipart body rejected: {error.detail} (at most {max_images} images "
                         "per request)") from None
    try:
        files = [(upload.filename or field_name, await upload.read())
                 for field_name, upload in form.multi_items() if isinstance(upload, UploadFile)]
    finally:
        await form.close()
    if not files:
        raise ServeError(400, "no_image", "the multipart body has no file part: attach the image as a file")
    return files


def decode(predictor: Predictor, name: str, data: bytes) -> np.ndarray:
    """Runs in the decode pool: encoded bytes -> network input, exactly as ``Predictor`` does."""
    try:
        return predictor.preprocess(data)
    except ImageError as error:
        status, code = image_error_status(error)
        raise ServeError(status, code, f"{name}: {error.reason}") from None
