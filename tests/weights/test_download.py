"""Downloading into the cache: verified, atomic, and a helpful error offline (no network used)."""

from __future__ import annotations

import hashlib
import urllib.error
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from effnet.errors import WeightsError
from effnet.weights import download
from effnet.weights.cache import CACHE_ENV, cache_dir
from effnet.weights.loading import create_model
from effnet.weights.registry import get_weights


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)
    return tmp_path / "cache"


@pytest.fixture()
def lite0_url_entry(tmp_path: Path):  # noqa: ANN201
    """The embedded Lite0 file served from a file:// URL, named and checked as a hub file."""
    embedded = get_weights("efficientnet_lite0.tf_in1k")
    data = embedded.locate().read_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    served = tmp_path / "server" / f"efficientnet-lite0-{prefix}.pth"
    served.parent.mkdir()
    served.write_bytes(data)
    return replace(embedded, name="efficientnet_lite0.served", file=None, url=served.as_uri(), sha256=prefix)


def test_downloads_once_into_the_cache_and_loads(cache: Path, lite0_url_entry) -> None:  # noqa: ANN001
    assert not lite0_url_entry.available()
    model = create_model("efficientnet_lite0", lite0_url_entry).eval()
    cached = cache / "weights" / lite0_url_entry.filename
    assert cached.is_file() and lite0_url_entry.available()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporary file left

    reference = create_model("efficientnet_lite0", "default").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=0)

    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the cached file must be used")

    assert download.fetch(lite0_url_entry, opener=no_network) == cached


def test_an_entry_without_checksum_downloads_with_a_warning(cache: Path, lite0_url_entry) -> None:  # noqa: ANN001
    """PaddleClas and mindcv publish no checksum: their entries download, say so once, and load."""
    unverified = replace(lite0_url_entry, sha256=None)
    with pytest.warns(download.UnverifiedDownloadWarning, match="no checksum is registered for "
                                                                "'efficientnet_lite0.served'"):
        cached = download.fetch(unverified, progress=False)
    assert cached.read_bytes() == get_weights("efficientnet_lite0.tf_in1k").locate().read_bytes()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cached file is used quietly
        assert create_model("efficientnet_lite0", unverified).pretrained_cfg.sha256 is None


def test_checksum_mismatch_saves_nothing(cache: Path, lite0_url_entry) -> None:  # noqa: ANN001
    wrong = replace(lite0_url_entry, sha256="00000000")
    with pytest.raises(WeightsError, match="does not match the expected 00000000; nothing was saved"):
        download.fetch(wrong, progress=False)
    assert not any((cache / "weights").iterdir())


def test_offline_error_says_how_to_pass_a_local_file(cache: Path, lite0_url_entry) -> None:  # noqa: ANN001
    def unreachable(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise urllib.error.URLError("Temporary failure in name resolution")

    with pytest.raises(WeightsError) as error:
        download.fetch(lite0_url_entry, opener=unreachable)
    message = str(error.value)
    assert "Temporary failure" in message and lite0_url_entry.url in message
    assert "--weights FILE" in message and str(cache / "weights" / lite0_url_entry.filename) in message
    assert "\n" not in message


def test_offline_mode_never_touches_the_network(cache: Path, lite0_url_entry,  # noqa: ANN001
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(download.OFFLINE_ENV, "1")

    def no_network(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("network used while offline")

    with pytest.raises(WeightsError, match="EFFNET_OFFLINE is set.*--weights FILE"):
        download.fetch(lite0_url_entry, opener=no_network)


def test_a_corrupted_cache_file_is_caught_on_load(cache: Path, lite0_url_entry) -> None:  # noqa: ANN001
    path = download.fetch(lite0_url_entry, progress=False)
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="checksum mismatch.*sha256 prefix"):
        create_model("efficientnet_lite0", lite0_url_entry)


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "effnet"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    entry = get_weights("efficientnet_b0.tv_in1k")
    assert download.cached_path(entry) == tmp_path / "mine" / "weights" / "efficientnet_b0_rwightman-7f5810bc.pth"
