"""Fixtures shared by every test room. Each name says what it holds, so no test file defines
another fixture of the same name with another type:

- ``acceptance_photos``: the four real photos of issue 3 as RGB/grey uint8 arrays
  (scikit-image and scikit-learn ship them), at full size.
- ``photo_thumbnails``: six real photos as PIL RGB images of at most 320 px, cheap to decode,
  for building small labelled image sets on disk.
- ``photo_tree``: an ImageFolder tree of those thumbnails with class folders in every naming
  style effnet reads, and the class each image is filed under (``PhotoTree``).
- ``lite0_predictor``: ``Predictor("efficientnet_lite0")`` on the torch engine with the embedded
  ImageNet weights (``.engine`` is the ``TorchEngine``, ``.engine.model`` the module). Shared by
  the session: never change its settings.
- ``_private_cache`` (autouse): ``$EFFNET_CACHE`` is a folder of the session's own.
- ``tiny_classifier``: a builder of hand-made ONNX classifiers (see ``TinyClassifier``).
- ``lite0_tflite``: Lite0 exported as an fp32 ``.tflite`` file (skipped without the tflite extra).
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from effnet.data.transforms import Preprocessing
from effnet.runtime.onnx_metadata import INPUT_FLOAT, write_metadata

REFERENCE = Path(__file__).parent / "reference"


def read_reference(name: str) -> list[dict[str, str]]:
    with open(REFERENCE / name) as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """One cache folder for the session (and the CLI runs it starts), never the user's own:
    ``--engine auto`` exports each model once into it, as it would for a user."""
    import os

    os.environ["EFFNET_CACHE"] = str(tmp_path_factory.mktemp("effnet-cache"))


@pytest.fixture(autouse=True)
def _seed() -> Iterator[None]:
    """Every test starts from the same seeds and torch's thread count (an engine or a trainer
    told ``threads=N`` sets it process-wide; the next test must not inherit it)."""
    torch.manual_seed(0)
    np.random.seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def acceptance_photos() -> dict[str, np.ndarray]:
    """chelsea (a tabby cat), coffee (espresso), camera (grey: a cameraman with a tripod), china
    (the Summer Palace): the four photos predict's acceptance test of issue 3 names."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    return {
        "chelsea": skimage.data.chelsea(),
        "coffee": skimage.data.coffee(),
        "camera": skimage.data.camera(),
        "china": load_sample_image("china.jpg"),
    }


#: name -> (package, file inside it): real photos shipped in installed packages
THUMBNAIL_SOURCES = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}


@pytest.fixture(scope="session")
def photo_thumbnails() -> dict[str, Image.Image]:
    loaded = {}
    for name, (package, relative) in THUMBNAIL_SOURCES.items():
        with resources.as_file(resources.files(package).joinpath(relative)) as path:
            image = Image.open(path).convert("RGB")
        image.thumbnail((320, 320))
        loaded[name] = image
    return loaded


@dataclass(frozen=True)
class PhotoTree:
    """``root/<class folder>/<photo>``; ``paths`` sorted as a scan sorts them, ``targets`` their
    classes. flower is filed under tench (0), so top-1 and top-5 both have a miss."""

    root: Path
    paths: list[Path]
    targets: list[int]


#: class folder -> photo: an index, a zero-padded index, a synset (n03773504 = missile, 657)
PHOTO_TREE = {"281": "chelsea", "0967": "coffee", "n03773504": "rocket", "652": "hopper", "698": "china",
              "0": "flower"}


@pytest.fixture
def photo_tree(tmp_path: Path, photo_thumbnails: dict[str, Image.Image]) -> PhotoTree:
    root = tmp_path / "photo_tree"
    for folder, name in PHOTO_TREE.items():
        (root / folder).mkdir(parents=True)
        photo_thumbnails[name].save(root / folder / f"{name}.{'png' if name == 'chelsea' else 'jpg'}")
    paths = sorted(root.glob("*/*"))  # class folders sort as strings: 0, 0967, 281, 652, 698, n03773504
    return PhotoTree(root, paths, [0, 967, 281, 652, 698, 657])


@pytest.fixture(scope="session")
def lite0_predictor():  # noqa: ANN201 - the import stays inside so that collecting tests loads no weights
    from effnet.runtime.predictor import Predictor

    return Predictor("efficientnet_lite0", engine="torch")


@dataclass(frozen=True)
class TinyClassifier:
    """Builds ONNX classifiers small enough to write in every test: the mean of each channel of
    the image, times a fixed random (3, classes) matrix (``weight(classes)``).

    ``layout`` is an ``effnet.runtime.onnx_metadata`` input layout: float32 NCHW at ``size``
    (``batch`` is the batch dimension, a name for dynamic), or uint8 NHWC images of any size
    (the layout of graphs with in-graph preprocessing). ``metadata`` writes effnet's ONNX
    metadata (architecture lite0, ImageNet labels for 1000 classes, mean 0.5 / std 0.25).
    """

    def weight(self, classes: int = 1000) -> np.ndarray:
        return np.random.default_rng(0).normal(size=(3, classes)).astype(np.float32)

    def logits(self, channel_means: np.ndarray, classes: int = 1000) -> np.ndarray:
        """What the graph computes for images whose per-channel means are ``channel_means`` (N, 3)."""
        return channel_means @ self.weight(classes)

    def __call__(self, path: Path, *, layout: str = INPUT_FLOAT, metadata: bool = True, size: int = 32,
                 classes: int = 1000, batch: int | str = "N", opset: int = 18) -> Path:
        if layout == INPUT_FLOAT:
            nodes = [helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
                     helper.make_node("Flatten", ["pooled"], ["flat"])]
            image = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, size, size])
        else:
            mean = (helper.make_node("ReduceMean", ["f", "axes"], ["flat"], keepdims=0) if opset >= 18
                    else helper.make_node("ReduceMean", ["f"], ["flat"], keepdims=0, axes=[1, 2]))
            nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT), mean]
            image = helper.make_tensor_value_info("x", TensorProto.UINT8, [batch, "H", "W", 3])
        nodes.append(helper.make_node("MatMul", ["flat", "w"], ["logits"]))
        initializers = [numpy_helper.from_array(self.weight(classes), "w")]
        if layout != INPUT_FLOAT and opset >= 18:
            initializers.append(numpy_helper.from_array(np.array([1, 2], np.int64), "axes"))
        graph = helper.make_graph(
            nodes, "tiny", [image], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
            initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        if metadata:
            labels: str | Sequence[str] = "imagenet1k" if classes == 1000 else [f"thing{i}" for i in range(classes)]
            write_metadata(model, {
                "arch": "efficientnet_lite0", "weights": "tiny", "input": layout, "labels": labels,
                "num_classes": classes,
                "preprocessing": Preprocessing(size=size, mean=(0.5,) * 3, std=(0.25,) * 3).to_dict(),
            })
        onnx.checker.check_model(model)
        onnx.save(model, path)
        return path


@pytest.fixture(scope="session")
def tiny_classifier() -> TinyClassifier:
    return TinyClassifier()


def _can_create_files_in(folder: Path) -> bool:
    try:
        (folder / ".effnet_probe").touch()
    except OSError:
        return False
    (folder / ".effnet_probe").unlink()
    return True


@pytest.fixture
def unwritable_folder(tmp_path: Path):
    """A folder no file can be created in: a read-only one, or, where permission bits do not
    stop this user (root), sysfs, which refuses new files to everyone."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if _can_create_files_in(folder):
            folder = Path("/sys")
            if not folder.is_dir() or _can_create_files_in(folder):
                pytest.skip("no folder here refuses new files to this user")
        yield folder
    finally:
        (tmp_path / "read_only").chmod(0o755)


@pytest.fixture
def file_size_limit():
    """``with file_size_limit(n):`` no file grows past ``n`` bytes, and a write past it fails
    as on a full disk (RLIMIT_FSIZE: the same failed write(), as EFBIG instead of ENOSPC,
    without root or a small file system)."""
    import resource
    import signal

    @contextlib.contextmanager
    def limited(limit: int = 1 << 20) -> Iterator[None]:
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write, do not kill the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            yield
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)

    return limited


@pytest.fixture(scope="session")
def lite0_tflite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0 with its embedded weights as an fp32 ``.tflite`` file (``effnet export --format
    tflite``); skipped where the ``tflite`` extra is not installed."""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from effnet.deploy.export.tflite import export_tflite

    return export_tflite("efficientnet_lite0", "default", tmp_path_factory.mktemp("tflite") / "lite0.tflite").path


@pytest.fixture(scope="session")
def lite0_pte(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Lite0 with its embedded weights as an ExecuTorch ``.pte`` program (``effnet export
    --format executorch``); skipped where the ``executorch`` extra is not installed."""
    pytest.importorskip("executorch")
    from effnet.deploy.export.executorch import export_executorch

    return export_executorch("efficientnet_lite0", "default", tmp_path_factory.mktemp("pte") / "lite0.pte").path
