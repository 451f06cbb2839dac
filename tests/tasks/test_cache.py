"""``effnet cache``: what it lists and removes, on entries laid out as ``deploy.cache`` writes them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from effnet.cli import main
from effnet.deploy.cache import FORMAT_VERSION, INFO_FILE, MODEL_FILE, effnet_version


def _entry(root: Path, name: str, *, version: str, whole: bool = True) -> None:
    """One cache folder: a model file and the entry.json that describes it (``deploy.cache``'s layout)."""
    folder = root / "engines" / name
    folder.mkdir(parents=True)
    model = b"an exported graph " + name.encode()
    (folder / MODEL_FILE).write_bytes(model if whole else model[:5])
    (folder / INFO_FILE).write_text(json.dumps({
        "key": {"model": None, "weights": f"{name}.tf_in1k", "size": None, "engine": "onnxruntime",
                "effnet_version": version, "format": FORMAT_VERSION},
        "arch": "efficientnet_lite0", "weights_entry": f"{name}.tf_in1k", "built": "2026-12-01T00:00:00+0000",
        "model_sha256": hashlib.sha256(model).hexdigest(), "model_bytes": len(model)}))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EFFNET_CACHE", str(tmp_path))
    _entry(tmp_path, "current", version=effnet_version())
    _entry(tmp_path, "older", version="0.0.1")
    _entry(tmp_path, "damaged", version=effnet_version(), whole=False)
    return tmp_path


def test_stale_lists_what_clear_stale_removes(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--stale`` said "with clear" and was silently ignored by ``list``: it now shows exactly the
    entries ``clear --stale`` would remove."""
    assert main(["cache", "list", "--stale", "--json", "-"]) == 0
    listed = {row["entry"]: row["state"] for row in json.loads(capsys.readouterr().out)["entries"]}
    assert listed == {"older": "stale", "damaged": "corrupt"}
    assert main(["cache", "clear", "--stale", "--json", "-"]) == 0
    removed = json.loads(capsys.readouterr().out)
    assert sorted(row["entry"] for row in removed["removed"]) == ["damaged", "older"]
    assert sorted(path.name for path in (cache / "engines").iterdir()) == ["current"]


def test_clear_writes_what_it_removed_as_json(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``clear --json`` was accepted and ignored."""
    out = cache / "removed.json"
    assert main(["cache", "clear", "--json", str(out)]) == 0
    assert capsys.readouterr().out.startswith("removed 3 entries")
    document = json.loads(out.read_text())
    assert document["folder"] == str(cache / "engines")
    assert sorted(row["entry"] for row in document["removed"]) == ["current", "damaged", "older"]
    assert list((cache / "engines").iterdir()) == []
