"""The compiled-engine cache behind ``--engine auto``: built once and checked against torch,
loaded afterwards without torch, safe when two processes build at once, when an entry is
damaged or from another version, and when the cache cannot be written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.data.transforms import Preprocessing
from effnet.deploy import cache
from effnet.errors import EffnetError
from effnet.models.network import build_model
from effnet.models.spec import Padding
from effnet.runtime import open_engine
from effnet.runtime.onnxruntime_engine import OnnxRuntimeEngine
from effnet.runtime.torch_engine import TorchEngine
from effnet.weights.entry import WeightsEntry
from effnet.weights.io import metadata_from_entry, write_safetensors

SHAPE = {"width_mult": 0.25, "depth_mult": 0.25}


def _tiny_weights(folder: Path) -> Path:
    """A small Lite0-shaped network with random weights, saved as effnet's safetensors (with
    its own preprocessing at 64 px), so that every export in these tests takes seconds."""
    torch.manual_seed(1)
    net = build_model("efficientnet_lite0", num_classes=5, **SHAPE)
    entry = WeightsEntry("efficientnet_lite0.tiny", "efficientnet_lite0", "effnet", Preprocessing(size=64),
                         padding=Padding.SYMMETRIC, bn_eps=1e-5, num_classes=5, labels=tuple("abcde"),
                         extra={"shape": SHAPE})
    path = folder / "tiny.safetensors"
    write_safetensors(net.state_dict(), path, metadata_from_entry(entry))
    return path


@dataclass(frozen=True)
class Built:
    """A cache folder holding one entry, built once for the module (tests copy it to change it)."""

    weights: Path
    cache: Path
    said: str


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    folder = tmp_path_factory.mktemp("cache-test")
    weights = _tiny_weights(folder)
    said = _run(f"from effnet.runtime import open_engine; open_engine('auto', None, {str(weights)!r})", folder / "cache")
    assert said.returncode == 0, said.stderr
    return Built(weights, folder / "cache", said.stderr)


@pytest.fixture()
def tiny_weights(built: Built) -> Path:
    return built.weights


@pytest.fixture()
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache folder of the test's own."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("EFFNET_CACHE", str(folder))
    return folder


@pytest.fixture()
def copied_cache(built: Built, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the built cache, for tests that change it."""
    folder = tmp_path / "cache"
    shutil.copytree(built.cache, folder)
    monkeypatch.setenv("EFFNET_CACHE", str(folder))
    return folder


def _photo_batch(acceptance_photos: dict[str, np.ndarray], preprocessing: Preprocessing) -> np.ndarray:
    photos = [image for image in acceptance_photos.values() if image.ndim == 3]
    return np.stack([preprocessing(image) for image in photos])


def _run(code: str, env_cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EFFNET_CACHE": str(env_cache)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_first_run_builds_and_answers_as_torch_later_runs_load_without_torch(
    built: Built, copied_cache: Path, acceptance_photos: dict[str, np.ndarray],
) -> None:
    assert "building the fast CPU engine for tiny.safetensors once" in built.said
    code = ("import sys; from effnet.runtime import open_engine; "
            f"engine = open_engine('auto', None, {str(built.weights)!r}); "
            "print(type(engine).__name__, 'torch' in sys.modules)")
    warm = _run(code, copied_cache)
    assert warm.returncode == 0, warm.stderr
    assert warm.stdout.split() == ["OnnxRuntimeEngine", "False"]
    assert "building" not in warm.stderr

    engine = open_engine("auto", None, str(built.weights))
    assert isinstance(engine, OnnxRuntimeEngine)
    assert Path(engine.path).parent.parent == copied_cache / "engines"
    reference = open_engine("torch", None, str(built.weights))
    assert engine.preprocessing == reference.preprocessing and engine.labels == reference.labels
    batch = _photo_batch(acceptance_photos, reference.preprocessing)
    np.testing.assert_allclose(engine(batch), reference(batch), atol=1e-4)
    assert len(cache.list_entries()) == 1


def test_a_damaged_entry_is_found_and_rebuilt(tiny_weights: Path, copied_cache: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    first = open_engine("auto", None, str(tiny_weights))
    model_file = Path(first.path)
    model_file.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])  # truncated
    assert [entry.state for entry in cache.list_entries()] == ["corrupt"]
    capsys.readouterr()
    again = open_engine("auto", None, str(tiny_weights))
    err = capsys.readouterr().err
    assert "is damaged" in err and "building" in err
    assert again.path == first.path and [entry.state for entry in cache.list_entries()] == ["ok"]


def test_an_entry_of_another_version_is_stale_never_loaded_and_cleared_alone(
    tiny_weights: Path, copied_cache: Path,
) -> None:
    current = Path(open_engine("auto", None, str(tiny_weights)).path).parent
    old = current.with_name("0" * 24)
    old.mkdir()
    (old / cache.MODEL_FILE).write_bytes((current / cache.MODEL_FILE).read_bytes())
    info = json.loads((current / cache.INFO_FILE).read_text())
    info["key"]["effnet_version"] = "0.0.1"
    (old / cache.INFO_FILE).write_text(json.dumps(info))
    states = {entry.path.name: entry.state for entry in cache.list_entries()}
    assert states == {current.name: "ok", old.name: "stale"}
    removed = cache.clear(stale_only=True)
    assert [entry.path for entry in removed] == [old] and current.is_dir() and not old.exists()


def test_clearing_a_cache_that_cannot_be_changed_says_so(tiny_weights: Path, copied_cache: Path) -> None:
    """`effnet cache clear` on a read-only cache printed "removed 1 entry (18.6 MB)" and
    exited 0 with everything still there."""
    engines = copied_cache / cache.ENGINES_FOLDER
    (entry,) = cache.list_entries()
    engines.chmod(0o555)
    try:
        if os.access(engines, os.W_OK):
            pytest.skip("this user (root) may change a read-only folder")
        with pytest.raises(EffnetError) as caught:
            cache.clear()
    finally:
        engines.chmod(0o755)
    assert str(caught.value) == f"removed 0 entries; could not remove 1 from {engines} (Permission denied)"
    assert [found.path for found in cache.list_entries()] == [entry.path]


def test_two_processes_building_the_same_entry_at_once_both_succeed(tiny_weights: Path, private_cache: Path) -> None:
    code = ("from effnet.runtime import open_engine; import numpy as np; "
            f"engine = open_engine('auto', None, {str(tiny_weights)!r}); "
            "print(engine.path, float(engine(engine.example_input(1)).sum()))")
    env = {**os.environ, "EFFNET_CACHE": str(private_cache)}
    runs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(2)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in results]
    assert results[0][0] == results[1][0]  # the same file and the same answer
    assert sum("building" in err for _, err in results) == 1  # the lock: the second one waited
    entries = cache.list_entries()
    assert [entry.state for entry in entries] == ["ok"]
    assert not list((private_cache / "engines").glob(".build-*"))


def test_a_build_removes_what_a_killed_build_of_its_entry_left(tiny_weights: Path, private_cache: Path) -> None:
    """SIGKILL mid-build (a container killed at start-up) left the build folder, the size of
    the model, until `effnet cache clear`; another entry's build folder may be in use."""
    digest = cache.cache_key(None, str(tiny_weights), None).digest
    engines = private_cache / cache.ENGINES_FOLDER
    killed = engines / f"{cache.staging_prefix(digest)}k1ll3d"
    killed.mkdir(parents=True)
    (killed / ".model.onnx.u2g9c0t.tmp").write_bytes(bytes(1000))
    other = engines / f"{cache.staging_prefix('0' * 24)}busy"
    other.mkdir()
    engine = open_engine("auto", None, str(tiny_weights))
    assert isinstance(engine, OnnxRuntimeEngine)
    assert sorted(path.name for path in engines.glob(".build-*")) == [other.name]


def test_a_cache_that_cannot_be_written_costs_speed_not_the_answer(
    tiny_weights: Path, unwritable_folder: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EFFNET_CACHE", str(unwritable_folder / "cache"))
    with pytest.warns(cache.EngineFallbackWarning, match="cannot write the engine cache") as caught:
        engine = open_engine("auto", None, str(tiny_weights))
    assert isinstance(engine, TorchEngine) and len(caught) == 1


def test_a_read_only_cache_still_serves_what_it_holds(tiny_weights: Path, copied_cache: Path) -> None:
    modes = {path: path.stat().st_mode for path in copied_cache.rglob("*")}
    try:
        for path in [*copied_cache.rglob("*"), copied_cache]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        engine = open_engine("auto", None, str(tiny_weights))
    finally:
        copied_cache.chmod(0o755)
        for path, mode in modes.items():
            path.chmod(mode)
    assert isinstance(engine, OnnxRuntimeEngine) and Path(engine.path).is_relative_to(copied_cache)


def test_a_model_that_does_not_export_runs_on_torch_with_one_warning(
    tiny_weights: Path, private_cache: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from effnet.deploy.export.onnx import ExportError

    def failing(*args: object, **kwargs: object) -> None:
        raise ExportError("torch.onnx.export failed: an op this exporter lacks")

    monkeypatch.setattr(cache, "build", failing)
    with pytest.warns(cache.EngineFallbackWarning, match="running on torch instead"):
        engine = open_engine("auto", None, str(tiny_weights))
    assert isinstance(engine, TorchEngine)


@pytest.mark.parametrize("weights, options", [("none", {}), ("default", {"channels_last": False})])
def test_random_weights_and_torch_only_options_run_torch_and_cache_nothing(
    private_cache: Path, weights: str, options: dict[str, object],
) -> None:
    engine = open_engine("auto", "efficientnet_lite0", weights, **options)
    assert isinstance(engine, TorchEngine)
    assert not (private_cache / "engines").exists()


def test_the_key_follows_the_weights_bytes_and_the_size(tiny_weights: Path, private_cache: Path) -> None:
    key = cache.cache_key(None, str(tiny_weights), None)
    assert key == cache.cache_key(None, str(tiny_weights), None)
    assert key.digest != cache.cache_key(None, str(tiny_weights), 96).digest
    copy = tiny_weights.with_name("renamed.safetensors")
    copy.write_bytes(tiny_weights.read_bytes())
    assert cache.cache_key(None, str(copy), None).digest == key.digest  # the bytes, not the name
    copy.write_bytes(tiny_weights.read_bytes()[:-1] + b"\x01")
    assert cache.cache_key(None, str(copy), None).digest != key.digest
