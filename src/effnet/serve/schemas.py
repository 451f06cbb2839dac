"""The API's response models and request-body description: what clients get, and the OpenAPI docs.

These pydantic models are both the validation of what the routes return and the schema
shown at /docs, so the documentation cannot drift from the answers.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class PredictionOut(BaseModel):
    index: int = Field(description="class index in the model's output")
    label: str = Field(description="class name")
    probability: float = Field(description="softmax probability, 0-1")


class ErrorDetail(BaseModel):
    status: int = Field(description="the HTTP status this error has as a whole answer")
    code: str = Field(description="machine-readable reason, e.g. not_an_image, too_many_pixels")
    message: str = Field(description="one line for a person, naming the file")


class ImageResult(BaseModel):
    """One image's answer: ``predictions`` and ``batch_size``, or ``error`` when it could not be read."""

    filename: str = Field(description="the multipart file name, or 'image' for a raw body")
    predictions: list[PredictionOut] | None = Field(None, description="the top-k classes (absent on error)")
    batch_size: int | None = Field(None, description="images in the forward pass that served this one "
                                                     "(absent on error)")
    error: ErrorDetail | None = Field(None, description="why this image was not classified (absent on success)")


class Timing(BaseModel):
    total_ms: float = Field(description="from the request's arrival to the answer")
    preprocess_ms: float = Field(description="decoding and preprocessing (images in parallel)")
    queue_ms: float = Field(description="longest wait of this request's images for a forward pass")
    inference_ms: float = Field(description="longest forward pass that served this request")


class PredictResponse(BaseModel):
    model: str
    engine: str = Field(description="the inference engine that answered (onnxruntime, torch, openvino, ...)")
    backend: str = Field(description="the same as engine: its name before effnet 0.4, kept for older clients")
    topk: int
    results: list[ImageResult]
    timing: Timing


class ModelInfo(BaseModel):
    name: str
    engine: str = Field(description="the inference engine (onnxruntime, torch, openvino, ...)")
    backend: str = Field(description="the same as engine: its name before effnet 0.4, kept for older clients")
    input_size: int
    num_classes: int
    preprocessing: dict[str, Any]
    max_batch: int
    max_wait_ms: float
    instances: int = Field(description="forward passes that may run at once (--instances): model instances "
                                       "as threads sharing the weights")
    workers: int = Field(description="the same as instances: its name before effnet 0.4.1, kept for older clients")
    queue_size: int


class ModelList(BaseModel):
    default: str
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: each status answers an ``ErrorBody``."""
    return {status: {"model": ErrorBody} for status in statuses}


#: ``openapi_extra`` of POST /v1/predict: the route reads its body itself (multipart or raw),
#: so FastAPI cannot infer the request body from the signature.
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
