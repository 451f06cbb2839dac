"""The HTTP API against a live server running Lite0 with its real weights.

Expected answers come from ``Predictor`` on the same bytes (the reference path of
``effnet predict``); the server must give the same classes and probabilities.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from effnet.runtime.onnx_metadata import INPUT_RGB
from effnet.runtime.predictor import Predictor

from .live import LiveServer, answered, assert_same, error_of, expected, serve


def test_multipart_images_match_direct_prediction(server: LiveServer, lite0: Predictor,
                                                  photo_files: dict[str, bytes]) -> None:
    files = [("files", (name, data, "application/octet-stream")) for name, data in photo_files.items()]
    response = httpx.post(f"{server.url}/v1/predict", files=files, params={"topk": 5}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "efficientnet_lite0" and body["topk"] == 5
    assert body["engine"] == body["backend"] == "onnxruntime"  # backend: the name before 0.4
    assert [r["filename"] for r in body["results"]] == list(photo_files)
    for result, data in zip(body["results"], photo_files.values()):
        assert_same(answered(result), expected(lite0, data))
        assert result["predictions"][0]["label"] == lite0.engine.labels[result["predictions"][0]["index"]]
    assert body["results"][1]["predictions"][0]["label"] == "espresso"  # coffee.jpg
    timing = body["timing"]
    assert timing["total_ms"] >= timing["inference_ms"] > 0 and timing["preprocess_ms"] > 0


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream", None])
def test_raw_body_is_one_image(server: LiveServer, lite0: Predictor, photo_files: dict[str, bytes],
                               content_type: str | None) -> None:
    data = photo_files["chelsea.jpg"]
    headers = {"Content-Type": content_type} if content_type else {}
    response = httpx.post(f"{server.url}/v1/predict?topk=3", content=data, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["filename"] == "image"
    assert_same(answered(result), expected(lite0, data, 3))


def test_topk_and_model_parameters(server: LiveServer, photo_files: dict[str, bytes]) -> None:
    data = photo_files["coffee.jpg"]
    every = httpx.post(f"{server.url}/v1/predict", params={"topk": 1000, "model": "lite0"}, content=data, timeout=60)
    assert every.status_code == 200
    predictions = every.json()["results"][0]["predictions"]
    assert len(predictions) == 1000 and sum(p["probability"] for p in predictions) == pytest.approx(1.0, abs=1e-6)
    assert every.json()["model"] == "efficientnet_lite0"  # the alias resolves to the served name


BAD_REQUESTS = {
    # name: (request kwargs, status, code)
    "text sent as a JPEG": (dict(content=b"hello, not a picture", headers={"Content-Type": "image/jpeg"}),
                            415, "not_an_image"),
    "text/plain body": (dict(content=b"hello", headers={"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    "JSON body": (dict(json={"image": "x"}), 415, "unsupported_media_type"),
    "empty body": (dict(content=b"", headers={"Content-Type": "image/jpeg"}), 400, "empty_body"),
    "empty file part": (dict(files=[("f", ("empty.jpg", b"", "image/jpeg"))]), 400, "bad_image"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_requests_get_a_4xx_json_error(server: LiveServer, case: str) -> None:
    kwargs, status, code = BAD_REQUESTS[case]
    response = httpx.post(f"{server.url}/v1/predict", timeout=60, **kwargs)
    assert (response.status_code, error_of(response)["code"]) == (status, code), response.text


def test_image_errors_name_the_file_and_the_reason(server: LiveServer, photo_files: dict[str, bytes]) -> None:
    jpeg = photo_files["coffee.jpg"]
    truncated = httpx.post(f"{server.url}/v1/predict", files=[("f", ("half.jpg", jpeg[: len(jpeg) // 3]))], timeout=60)
    assert truncated.status_code == 400 and error_of(truncated)["code"] == "bad_image"
    assert error_of(truncated)["message"].startswith("half.jpg:")

    huge = io.BytesIO()
    Image.new("RGB", (2100, 2000)).save(huge, format="PNG")  # 4.2 MP > the fixture's 4 MP, 20 kB on the wire
    bomb = httpx.post(f"{server.url}/v1/predict", files=[("f", ("big.png", huge.getvalue()))], timeout=60)
    assert bomb.status_code == 413 and error_of(bomb)["code"] == "too_many_pixels"
    assert "4,200,000 pixels" in error_of(bomb)["message"]



def test_each_image_is_answered_on_its_own(server: LiveServer, lite0: Predictor,
                                           photo_files: dict[str, bytes]) -> None:
    """One bad file does not sink the others: 200 with an error in the bad one's place."""
    jpeg = photo_files["coffee.jpg"]
    one_bad = [("f", ("good.jpg", jpeg)), ("f", ("bad.jpg", b"plain text, no image")), ("f", ("half.jpg", jpeg[:999]))]
    mixed = httpx.post(f"{server.url}/v1/predict", files=one_bad, timeout=60)
    assert mixed.status_code == 200, mixed.text
    good, bad, half = mixed.json()["results"]
    assert good["filename"] == "good.jpg" and "error" not in good
    assert_same(answered(good), expected(lite0, jpeg))
    assert bad == {"filename": "bad.jpg", "error": {
        "status": 415, "code": "not_an_image", "message": "bad.jpg: not an image (unrecognised format)"}}
    assert half["error"]["code"] == "bad_image" and "predictions" not in half

    all_bad = [("f", ("bad.jpg", b"plain text, no image")), ("f", ("half.jpg", jpeg[:999]))]
    refused = httpx.post(f"{server.url}/v1/predict", files=all_bad, timeout=60)
    assert refused.status_code == 415 and error_of(refused)["code"] == "not_an_image"  # the first one's
    assert error_of(refused)["message"].startswith("no image could be read: bad.jpg: not an image")
    assert "half.jpg: " in error_of(refused)["message"]

    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'effnet_image_errors_total{code="not_an_image"}' in metrics


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=xyz", "multipart/form-data"])
def test_a_malformed_multipart_body_says_so(server: LiveServer, content_type: str) -> None:
    body = b'--other\r\nContent-Disposition: form-data; name="f"; filename="a.jpg"\r\n\r\nxx\r\n--other--\r\n'
    response = httpx.post(f"{server.url}/v1/predict", content=body, headers={"Content-Type": content_type}, timeout=60)
    assert response.status_code == 400 and error_of(response)["code"] == "bad_multipart"
    message = error_of(response)["message"]
    assert message.startswith("malformed multipart body: ") and "images" not in message
    assert not [record for record in server.records if record.name.startswith("python_multipart")]  # no log noise


def test_multipart_with_only_fields_has_no_image(server: LiveServer) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--b--\r\n'
    response = httpx.post(f"{server.url}/v1/predict", content=body,
                          headers={"Content-Type": "multipart/form-data; boundary=b"}, timeout=60)
    assert response.status_code == 400 and error_of(response)["code"] == "no_image"


def test_size_limits(server: LiveServer, photo_files: dict[str, bytes]) -> None:
    big = b"\xff\xd8" + bytes(3 * 2**20)  # over the fixture's 2 MiB body limit

    def refused(content: object) -> httpx.Response:
        """The server answers 413 and closes before the upload ends, which may reset a client
        still sending (HTTP/1.1 allows it): a reset is retried, the answer must be the 413."""
        for _ in range(5):
            try:
                return httpx.post(f"{server.url}/v1/predict", content=content() if callable(content) else content,
                                  headers={"Content-Type": "image/jpeg"}, timeout=60)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):  # the reset, however it surfaces
                continue
        raise AssertionError("every attempt was reset before the 413 arrived")

    declared = refused(big)
    assert declared.status_code == 413 and error_of(declared)["code"] == "body_too_large"
    assert declared.headers["connection"] == "close"  # the unread body must not pass for a next request

    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(48):
            yield bytes(2**16)

    streamed = refused(chunks)
    assert streamed.status_code == 413 and error_of(streamed)["code"] == "body_too_large"

    nine = [("f", (f"{i}.jpg", photo_files["coffee.jpg"])) for i in range(9)]  # the fixture allows 8
    many = httpx.post(f"{server.url}/v1/predict", files=nine, timeout=60)
    assert many.status_code == 413 and error_of(many)["code"] == "too_many_images"
    assert error_of(many)["message"] == "more than 8 images in one request (--max-images)"


@pytest.mark.parametrize("topk", ["0", "-3", "1001", "five"])
def test_bad_topk_is_422(server: LiveServer, photo_files: dict[str, bytes], topk: str) -> None:
    response = httpx.post(f"{server.url}/v1/predict", params={"topk": topk}, content=photo_files["coffee.jpg"],
                          timeout=60)
    assert response.status_code == 422 and error_of(response)["code"] == "invalid_parameter"
    assert "topk" in error_of(response)["message"]


@pytest.mark.parametrize("model", ["efficientnet_b7", "no-such-net"])
def test_unknown_model_is_404(server: LiveServer, photo_files: dict[str, bytes], model: str) -> None:
    response = httpx.post(f"{server.url}/v1/predict", params={"model": model}, content=photo_files["coffee.jpg"],
                          timeout=60)
    assert response.status_code == 404 and error_of(response)["code"] == "unknown_model"
    assert "efficientnet_lite0" in error_of(response)["message"]


def test_unknown_route_and_wrong_method_are_json(server: LiveServer) -> None:
    assert error_of(httpx.get(f"{server.url}/v2/nothing"))["code"] == "not_found"
    wrong = httpx.get(f"{server.url}/v1/predict")
    assert wrong.status_code == 405 and error_of(wrong)["code"] == "method_not_allowed"


def test_health_models_page_and_docs(server: LiveServer, lite0: Predictor) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "models": ["efficientnet_lite0"]}
    for probe in ("/healthz", "/readyz", "/"):  # load balancers probe with HEAD
        head = httpx.head(f"{server.url}{probe}")
        assert head.status_code == 200 and head.content == b"", probe
    listing = httpx.get(f"{server.url}/v1/models").json()
    (model,) = listing["models"]
    assert listing["default"] == model["name"] == "efficientnet_lite0"
    assert model["input_size"] == lite0.engine.preprocessing.size and model["num_classes"] == 1000
    assert model["instances"] == model["workers"] == 1  # workers: the name before 0.4.1, for older clients
    assert model["preprocessing"] == lite0.engine.preprocessing.to_dict() | {
        "mean": list(lite0.engine.preprocessing.mean), "std": list(lite0.engine.preprocessing.std)}

    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and 'type="file"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("/static/app.js", "/static/style.css"):
        assert httpx.get(f"{server.url}{asset}").status_code == 200
    assert "http" not in page.text.replace('href="/', "")  # nothing from another host

    docs = httpx.get(f"{server.url}/docs").text
    assert "/static-offline-docs/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert httpx.get(f"{server.url}/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    schema = httpx.get(f"{server.url}/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "image/*"} <= set(body)
    result = schema["components"]["schemas"]["ImageResult"]  # the per-image contract is documented
    assert {"predictions", "batch_size", "error"} <= set(result["properties"]) and result["required"] == ["filename"]
    assert "answered on its own" in schema["paths"]["/v1/predict"]["post"]["description"]


def test_concurrent_requests_share_a_forward_pass(lite0: Predictor, photo_files: dict[str, bytes]) -> None:
    names = ["chelsea.jpg", "coffee.jpg", "camera.jpg", "china.jpg"]

    async def burst(url: str) -> list[dict]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            replies = await asyncio.gather(*(client.post("/v1/predict", content=photo_files[n]) for n in names))
        return [reply.json() for reply in replies]

    # a long max wait: the batch goes when it is full, so this test does not wait for it
    with serve(lite0, max_batch=4, max_wait_ms=10_000) as live:
        bodies = asyncio.run(burst(live.url))
        metrics = httpx.get(f"{live.url}/metrics").text
    for body, name in zip(bodies, names):
        (result,) = body["results"]
        assert result["batch_size"] == 4
        assert_same(answered(result), expected(lite0, photo_files[name]))
    assert 'effnet_batch_size_count{model="efficientnet_lite0"} 1.0' in metrics


def test_metrics_count_what_happened(lite0: Predictor, photo_files: dict[str, bytes]) -> None:
    with serve(lite0, max_batch=1) as live:
        for name in ("coffee.jpg", "china.jpg", "camera.jpg"):
            assert httpx.post(f"{live.url}/v1/predict", content=photo_files[name], timeout=60).status_code == 200
        pair = [("f", (n, photo_files[n])) for n in ("coffee.jpg", "chelsea.jpg")]
        assert httpx.post(f"{live.url}/v1/predict", files=pair, timeout=60).status_code == 200
        assert httpx.post(f"{live.url}/v1/predict", content=b"junk", timeout=60).status_code == 415
        response = httpx.get(f"{live.url}/metrics")
        openmetrics = httpx.get(f"{live.url}/metrics", headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")  # what Prometheus 2 reads
    families = {family.name: family for family in text_string_to_metric_families(response.text)}

    def value(family: str, sample: str, **labels: str) -> float:
        (found,) = [s.value for s in families[family].samples if s.name == sample and labels.items() <= s.labels.items()]
        return found

    assert value("effnet_http_requests", "effnet_http_requests_total", route="/v1/predict", status="200") == 4
    assert value("effnet_http_requests", "effnet_http_requests_total", route="/v1/predict", status="415") == 1
    assert value("effnet_http_errors", "effnet_http_errors_total", code="not_an_image") == 1
    assert value("effnet_images", "effnet_images_total") == 5
    assert value("effnet_batch_size", "effnet_batch_size_count") == 5  # max batch 1: one pass per image
    assert value("effnet_batch_size", "effnet_batch_size_sum") == 5
    assert value("effnet_batch_size", "effnet_batch_size_bucket", le="1.0") == 5
    assert value("effnet_http_request_duration_seconds", "effnet_http_request_duration_seconds_count",
                 route="/v1/predict") == 5
    assert value("effnet_queue_depth", "effnet_queue_depth") == 0
    assert value("effnet_queue_capacity", "effnet_queue_capacity") == 128
    assert value("effnet_ready", "effnet_ready") == 1
    assert families["effnet_inference_duration_seconds"].type == "histogram"
    assert "process_cpu_seconds" in families
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


def test_metrics_label_every_route_by_its_template(lite0: Predictor) -> None:
    with serve(lite0) as live:
        for path in ("/openapi.json", "/docs", "/static/app.js", "/static/style.css", "/", "/no/such/page"):
            httpx.get(f"{live.url}{path}")
        httpx.head(f"{live.url}/healthz")
        metrics = httpx.get(f"{live.url}/metrics").text
    counted = {(s.labels["method"], s.labels["route"], s.labels["status"]): s.value
               for family in text_string_to_metric_families(metrics) if family.name == "effnet_http_requests"
               for s in family.samples if s.name == "effnet_http_requests_total"}
    assert counted == {
        ("GET", "/openapi.json", "200"): 1, ("GET", "/docs", "200"): 1, ("GET", "/static", "200"): 2,
        ("GET", "/", "200"): 1, ("GET", "unmatched", "404"): 1, ("HEAD", "/healthz", "200"): 1}


def test_two_models_are_routed_by_name(lite0: Predictor, photo_files: dict[str, bytes]) -> None:
    lite1 = Predictor("efficientnet_lite1")
    data = photo_files["china.jpg"]
    with serve({"efficientnet_lite0": lite0, "efficientnet_lite1": lite1}) as live:
        listing = httpx.get(f"{live.url}/v1/models").json()
        by_default = httpx.post(f"{live.url}/v1/predict", content=data, timeout=60).json()
        by_alias = httpx.post(f"{live.url}/v1/predict", params={"model": "lite1"}, content=data, timeout=60).json()
    assert listing["default"] == "efficientnet_lite0"
    assert [(m["name"], m["input_size"]) for m in listing["models"]] == [
        ("efficientnet_lite0", 224), ("efficientnet_lite1", 240)]
    assert by_default["model"] == "efficientnet_lite0" and by_alias["model"] == "efficientnet_lite1"
    assert_same(answered(by_default["results"][0]), expected(lite0, data))
    assert_same(answered(by_alias["results"][0]), expected(lite1, data))


def test_an_image_input_onnx_model_serves(tmp_path: Path, photo_files: dict[str, bytes],
                                          tiny_classifier: Callable[..., Path]) -> None:
    """An `effnet export --with-preprocessing` graph (uint8 NHWC in) starts, warms up and answers."""
    predictor = Predictor(weights=str(tiny_classifier(tmp_path / "images.onnx", layout=INPUT_RGB)),
                          engine="onnxruntime")
    with serve(predictor) as live:
        response = httpx.post(f"{live.url}/v1/predict?topk=3", content=photo_files["chelsea.jpg"],
                              headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert response.status_code == 200, response.text
    assert_same(answered(response.json()["results"][0]), expected(predictor, photo_files["chelsea.jpg"], 3))
