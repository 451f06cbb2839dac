"""``Predictor``: the public inference API, with the real embedded weights on real photos."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effnet.data.images import ImageError, load_image
from effnet.runtime.onnx_metadata import INPUT_RGB
from effnet.runtime.predictor import Predictor, softmax, top_k

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby cat, tiger cat, Persian cat, Siamese cat, Egyptian Mau
# Issue 3's acceptance: chelsea's top-3 holds a cat class; the others' top-1.
EXPECTED_TOP1 = {"coffee": 967, "camera": 872, "china": 698}  # espresso, tripod, palace


@pytest.fixture(scope="module", params=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def predictor(request: pytest.FixtureRequest) -> Predictor:
    return Predictor(request.param, topk=5)


def test_real_photos_are_recognised(predictor: Predictor, acceptance_photos: dict[str, np.ndarray]) -> None:
    results = dict(zip(acceptance_photos, predictor(list(acceptance_photos.values()))))
    assert CAT_CLASSES & {p.index for p in results["chelsea"][:3]}
    for name, index in EXPECTED_TOP1.items():
        assert results[name][0].index == index, (name, results[name][:2])
    for predictions in results.values():
        probabilities = [p.probability for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6


def test_single_image_and_batch_agree(lite0_predictor: Predictor, acceptance_photos: dict[str, np.ndarray]) -> None:
    single = lite0_predictor(acceptance_photos["coffee"])
    batched = lite0_predictor([acceptance_photos["camera"], acceptance_photos["coffee"]])[1]
    assert [p.index for p in single] == [p.index for p in batched]
    assert single[0].probability == pytest.approx(batched[0].probability, abs=1e-5)
    assert single[0].label == "espresso"


def test_top_k_is_the_softmax_ranking() -> None:
    logits = np.array([[1.0, 3.0, 2.0, 3.0]])
    expected = np.exp(logits[0]) / np.exp(logits[0]).sum()
    np.testing.assert_allclose(softmax(logits)[0], expected)
    (ranked,) = top_k(logits, ["a", "b", "c", "d"], 3)
    assert [(p.index, p.label) for p in ranked] == [(1, "b"), (3, "d"), (2, "c")]  # ties: lower index first
    assert [p.probability for p in ranked] == pytest.approx(list(expected[[1, 3, 2]]))
    assert len(top_k(logits, "abcd", 10)[0]) == 4  # k is capped at the class count


def test_predict_files_reports_a_bad_file_and_goes_on(tmp_path: Path, lite0_predictor: Predictor,
                                                      acceptance_photos: dict[str, np.ndarray]) -> None:
    Image.fromarray(acceptance_photos["coffee"]).save(tmp_path / "coffee.png")
    (tmp_path / "notes.png").write_text("not an image")
    paths = [str(tmp_path / "notes.png"), str(tmp_path / "coffee.png"), str(tmp_path / "missing.jpg")]
    results = list(lite0_predictor.predict_files(paths))
    assert [path for path, _ in results] == paths
    assert isinstance(results[0][1], ImageError) and isinstance(results[2][1], ImageError)
    assert "not found" in results[2][1].reason
    assert results[1][1][0].index == 967


def test_a_bad_image_in_a_list_gets_its_error_and_the_rest_their_predictions(
        lite0_predictor: Predictor, acceptance_photos: dict[str, np.ndarray]) -> None:
    coffee = acceptance_photos["coffee"]
    results = lite0_predictor([coffee, b"not an image", coffee.astype(np.float32)])
    assert [p.index for p in results[0]] == [p.index for p in lite0_predictor(coffee)] and results[0][0].index == 967
    assert isinstance(results[1], ImageError) and results[1].kind == "not_an_image"
    assert isinstance(results[2], ImageError) and "uint8" in results[2].reason
    with pytest.raises(ImageError, match="not an image"):  # a single image raises, as before
        lite0_predictor(b"not an image")


def test_image_graphs_get_images_of_different_sizes_as_a_list(tmp_path: Path, tiny_classifier) -> None:
    """A graph with in-graph preprocessing takes raw images: a batch of two sizes must not be
    stacked (numpy cannot) but handed over as a list, by the Predictor and by the server's
    batcher (which uses the engine's ``collate``)."""
    from effnet.serve.batcher import DynamicBatcher

    predictor = Predictor(weights=str(tiny_classifier(tmp_path / "m.onnx", layout=INPUT_RGB)), topk=1)
    assert predictor.engine.name == "onnxruntime"  # --engine auto picked onnxruntime for the file
    rng = np.random.default_rng(2)
    paths = []
    for index, (height, width) in enumerate(((20, 30), (41, 17))):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    images = [load_image(path) for path in paths]
    expected = tiny_classifier.logits(np.stack([image.reshape(-1, 3).astype(np.float32).mean(0) for image in images]))
    results = dict(predictor.predict_files(paths))
    assert [results[path][0].index for path in paths] == [int(np.argmax(row)) for row in expected]

    async def serve_both() -> list[np.ndarray]:
        batcher = DynamicBatcher(predictor.engine, max_batch=4, max_wait=0.05)
        await batcher.start()
        try:
            outcomes = await asyncio.gather(*(batcher.run(image) for image in images))
        finally:
            await batcher.close()
        return [outcome.output for outcome in outcomes]

    for output, want in zip(asyncio.run(serve_both()), expected):
        np.testing.assert_allclose(output, want, rtol=1e-4, atol=1e-3)


def test_import_effnet_does_not_import_torch() -> None:
    code = "import sys, effnet; effnet.list_models(); effnet.Predictor; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
