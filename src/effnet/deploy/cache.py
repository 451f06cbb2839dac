"""The compiled-engine cache: what makes ``--engine auto`` fast without anyone exporting by hand.

The first time a model and its weights run on the CPU under ``auto``, they are exported once
(``deploy.export.onnx.export``: a fixed-size ONNX graph, checked against torch before it is
written) into ``$EFFNET_CACHE/engines/<key>/``; every later run loads that file straight into
onnxruntime, without importing torch. Why onnxruntime on a fixed-size export (measured on a
2-core AVX512-VNNI EPYC, Lite0, one `effnet bench` run, README "Speed"): it is 3-4x torch eager
at batch 1, the fixed size is ~1.2x the dynamic-size export, and OpenVINO's f32 was within a
few percent of it (faster at batch 16 by ~10%, slower at batch 1), while costing a second
runtime in the default install; OpenVINO stays one ``--engine openvino`` away.

The key is everything the compiled file depends on: the weights file's sha256 (its bytes,
not its name), the model asked for, the input size, the opset, the engine and effnet's
version. The entry records the sha256 of the file it holds, so a truncated or altered file
is found and rebuilt, and an entry from another effnet version is never loaded (``effnet
cache clear --stale`` removes those).

Safe under concurrency and failure: an entry is built in a private folder and renamed into
place whole; a lock makes a second process wait for the first one's build and then use it
(without the lock, e.g. on a file system without ``flock``, both build and the rename keeps
one), and removes what a killed build of the same entry left. A cache that cannot be
written (read-only, full) costs speed, never an answer: one warning, and the torch engine
runs; ``effnet cache clear`` on it says what it could not remove.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .._files import current_umask
from ..errors import EffnetError
from ..weights.cache import cache_dir
from ..weights.entry import WeightsEntry, sha256_of

#: Bumped when what an entry holds changes shape, so older entries read as stale.
FORMAT_VERSION = 1
ENGINES_FOLDER = "engines"
INFO_FILE = "entry.json"
MODEL_FILE = "model.onnx"
#: The opset of cached exports: the default export's (every onnxruntime fusion applies).
CACHE_OPSET = 18
#: ``weights`` values that mean random init: nothing to cache, the torch engine runs them.
RANDOM_WEIGHTS = ("none", "random")


class EngineFallbackWarning(UserWarning):
    """``auto`` could not use its compiled engine here and runs the torch engine instead."""


def engines_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / ENGINES_FOLDER


def effnet_version() -> str:
    from .. import __version__

    return __version__


@dataclass(frozen=True)
class CacheKey:
    """Everything a compiled file depends on; its digest names the entry's folder."""

    weights_sha256: str
    #: the canonical model asked for (``None``: the weights name it)
    model: str | None
    #: the weights entry's name, or the file's name: for listings only (the sha256 identifies)
    weights: str
    size: int | None
    opset: int = CACHE_OPSET
    engine: str = "onnxruntime"
    effnet_version: str = ""
    format: int = FORMAT_VERSION

    @property
    def digest(self) -> str:
        fields = asdict(self)
        fields.pop("weights")
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:24]


def weights_file(model: str | None, weights: Any) -> tuple[Path | None, str, str | None]:
    """Where the weights are on this machine, what to call them, and the canonical model.

    Torch-free (registry lookups and a path check only). The path is ``None`` for an entry
    whose file is not here yet (it is downloaded by the first build).
    """
    from ..models.variants import canonical_name
    from ..weights.registry import DEFAULT_MODEL, arch_for, get_weights, looks_like_path

    arch = canonical_name(model) if model else None
    if isinstance(weights, WeightsEntry):
        entry = weights
    elif isinstance(weights, os.PathLike) or looks_like_path(str(weights)):
        path = Path(weights).expanduser()
        return (path if path.is_file() else None), path.name, arch
    else:
        entry = get_weights(str(weights), arch or arch_for(str(weights)) or DEFAULT_MODEL)
    located = entry.locate()
    return (located if located is not None and located.is_file() else None), entry.name, arch


def cache_key(model: str | None, weights: Any, size: int | None) -> CacheKey | None:
    """The key for these weights, or ``None`` while their file is not on this machine."""
    path, name, arch = weights_file(model, weights)
    if path is None:
        return None
    return CacheKey(sha256_of(path), arch, name, size, effnet_version=effnet_version())


@dataclass(frozen=True)
class CacheEntry:
    """One folder of the cache, as ``effnet cache list`` shows it."""

    path: Path
    info: dict[str, Any]
    bytes: int
    #: ``ok``, ``stale`` (another effnet version or entry format) or ``corrupt``
    state: str

    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE


def read_entry(folder: Path) -> CacheEntry:
    """The entry in ``folder`` and whether it can be used (its file is whole and current)."""
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    try:
        info = json.loads((folder / INFO_FILE).read_text())
        if not isinstance(info, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        return CacheEntry(folder, {}, size, "corrupt")
    key = info.get("key", {})
    if key.get("format") != FORMAT_VERSION or key.get("effnet_version") != effnet_version():
        return CacheEntry(folder, info, size, "stale")
    model = folder / MODEL_FILE
    try:
        whole = model.stat().st_size == info.get("model_bytes") and sha256_of(model) == info.get("model_sha256")
    except OSError:
        whole = False
    return CacheEntry(folder, info, size, "ok" if whole else "corrupt")


def list_entries(root: Path | None = None) -> list[CacheEntry]:
    folder = engines_dir(root)
    if not folder.is_dir():
        return []
    return [read_entry(path) for path in sorted(folder.iterdir()) if path.is_dir() and not path.name.startswith(".")]


def clear(root: Path | None = None, *, stale_only: bool = False) -> list[CacheEntry]:
    """Remove the entries (only stale and corrupt ones with ``stale_only``) and any build
    folders left by killed builds; returns what was removed. Entries that cannot be removed
    (a read-only cache) are an ``EffnetError`` once the others are gone: a clear that
    reports success must have cleared."""
    folder = engines_dir(root)
    removed: list[CacheEntry] = []
    failures: list[OSError] = []
    for entry in list_entries(root):
        if stale_only and entry.state == "ok":
            continue
        try:
            shutil.rmtree(entry.path)
            removed.append(entry)
        except OSError as error:
            failures.append(error)
    if folder.is_dir():
        for leftover in folder.glob(".build-*"):
            if not stale_only or time.time() - leftover.stat().st_mtime > 24 * 3600:
                shutil.rmtree(leftover, ignore_errors=True)  # hidden, and never loaded: not worth an error
    if failures:
        reason = failures[0].strerror or str(failures[0])
        raise EffnetError(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}; could not remove "
                          f"{len(failures)} from {folder} ({reason})")
    return removed


@contextlib.contextmanager
def _build_lock(folder: Path, digest: str) -> Iterator[bool]:
    """One build of an entry at a time across processes (``flock``; released if the holder
    dies). Yields whether the lock is held: without it (no ``flock`` on some network file
    systems) builds may race, and the renames stay atomic."""
    with open(folder / f".{digest}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            yield False
        else:
            yield True


def staging_prefix(digest: str) -> str:
    """The name an entry's build folder starts with, beside the entry until it is renamed
    into place."""
    return f".build-{digest}-"


def _say(message: str) -> None:
    print(f"effnet: {message}", file=sys.stderr, flush=True)


def build(model: str | None, weights: Any, size: int | None, root: Path | None = None,
          key: CacheKey | None = None) -> CacheEntry:
    """Export, check and store the entry for these weights (``key``: theirs, when the caller
    has it already); returns it (or the one another process stored meanwhile). Raises
    ``OSError`` when the cache cannot be written and ``EffnetError`` when the export fails."""
    folder = engines_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    key = key or cache_key(model, weights, size)
    if key is None:
        # the weights are not on this machine yet: fetch them first (a download that cannot
        # happen is the same one-line error as on torch), then they have a key
        from ..weights.loading import entry_path, resolve_entry

        entry_path(resolve_entry(weights, model))
        key = cache_key(model, weights, size)
        if key is None:
            raise EffnetError(f"weights {weights_file(model, weights)[1]}: no local file after fetching them")
    with _build_lock(folder, key.digest) as exclusive:
        entry = _usable(folder / key.digest)
        if entry is not None:
            return entry  # another process built it while we waited
        if exclusive:  # no other build of this entry runs: a folder of its is what a killed build left
            for leftover in folder.glob(f"{staging_prefix(key.digest)}*"):
                shutil.rmtree(leftover, ignore_errors=True)
        return _build_into(folder, key, model, weights, size)


def _build_into(folder: Path, key: CacheKey, model: str | None, weights: Any, size: int | None) -> CacheEntry:
    from .export.onnx import NATIVE_SIZE, export

    _say(f"building the fast CPU engine for {key.weights} once: an ONNX export checked "
         f"against torch, kept in {folder} (`effnet cache list` shows it) ...")
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(key.digest), dir=folder))
    try:
        os.chmod(staging, 0o777 & ~current_umask())
        result = export(model, weights, staging / MODEL_FILE, size=size or NATIVE_SIZE, opset=CACHE_OPSET)
        info = {
            "key": asdict(key),
            "arch": result.arch,
            "weights_entry": result.metadata.get("weights"),
            "model_sha256": sha256_of(staging / MODEL_FILE),
            "model_bytes": (staging / MODEL_FILE).stat().st_size,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.perf_counter() - started, 1),
            "checks": result.checks,
        }
        (staging / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        target = folder / key.digest
        if target.exists():  # a corrupt or stale entry (a current one was returned before building)
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.rename(staging, target)
        except OSError:
            if _usable(target) is None:  # no lock and another process's rename came first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _say(f"built in {time.perf_counter() - started:.1f} s; later runs load it in a fraction of a second")
    entry = _usable(target)
    if entry is None:
        raise EffnetError(f"{target}: the entry just built does not read back whole")
    return entry


def _usable(folder: Path) -> CacheEntry | None:
    if not folder.is_dir():
        return None
    entry = read_entry(folder)
    return entry if entry.state == "ok" else None


def lookup(model: str | None, weights: Any, size: int | None, root: Path | None = None,
           key: CacheKey | None = None) -> CacheEntry | None:
    """The current, whole entry for these weights (``key``: theirs, when the caller has it
    already), or ``None`` (a damaged one is reported once)."""
    key = key or cache_key(model, weights, size)
    if key is None:
        return None
    folder = engines_dir(root) / key.digest
    if not folder.is_dir():
        return None
    entry = read_entry(folder)
    if entry.state == "corrupt":
        _say(f"warning: cached engine {folder} is damaged (its file does not match its record); rebuilding it")
        return None
    return entry if entry.state == "ok" else None


def load_auto(model: str | None, weights: Any = "default", *, device: str | None = None,
              threads: int | None = None, preprocessing: Mapping[str, Any] | None = None,
              precision: str | None = None, **options: Any) -> Any:
    """``--engine auto`` for weights that are not a file an engine runs as is: onnxruntime on
    the cached export on a CPU, else (a GPU, random weights, options only torch has, a cache
    that cannot be written, a model that does not export) the torch engine."""
    from ..runtime import ENGINES, auto_choice

    def torch_engine() -> Any:
        return ENGINES["torch"].load(model, weights, device=device or "cpu", threads=threads,
                                     preprocessing=preprocessing, **options,
                                     **({"precision": precision} if precision else {}))

    randomly = weights is None or (isinstance(weights, str) and weights.lower() in RANDOM_WEIGHTS)
    if precision not in (None, "fp32"):  # bf16/int8 are asked by name: the engine that offers them
        return torch_engine()
    if (auto_choice(device) == "torch" or options or randomly or ENGINES["onnxruntime"].missing()
            or importlib_missing("onnx", "onnxscript")):
        return torch_engine()
    size = (preprocessing or {}).get("size")
    key = cache_key(model, weights, size)  # hashes the weights: once per load
    entry = lookup(model, weights, size, key=key)
    if entry is None:
        from .export.onnx import ExportError

        try:
            entry = build(model, weights, size, key=key)
        except ExportError as error:
            warnings.warn(f"{error}; running on torch instead", EngineFallbackWarning, stacklevel=3)
            return torch_engine()
        except OSError as error:
            reason = error.strerror or str(error)
            warnings.warn(f"cannot write the engine cache in {engines_dir()} ({reason}): running on torch, "
                          "slower; set EFFNET_CACHE to a writable folder", EngineFallbackWarning, stacklevel=3)
            return torch_engine()
    return ENGINES["onnxruntime"].load(None, str(entry.model_file), threads=threads, preprocessing=preprocessing)


def importlib_missing(*packages: str) -> bool:
    import importlib.util

    return any(importlib.util.find_spec(package) is None for package in packages)
