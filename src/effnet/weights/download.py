"""Downloading weights into the user cache (``cache.py``), verified by checksum, written atomically.

``EFFNET_OFFLINE=1`` forbids network access: only cached or embedded files are used.
A file only ever appears in the cache under its final name once its checksum matched, so an
interrupted or corrupt download never poisons later runs. An entry without a checksum
(its publisher gives none) is downloaded whole and atomically too, with a warning that it
could not be verified; such entries are never a default (``registry.py``).
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._files import staged
from .._progress import progress as progress_bar
from ..errors import WeightsError
from .cache import cached_weights
from .entry import WeightsEntry, checksum_matches

OFFLINE_ENV = "EFFNET_OFFLINE"

Opener = Callable[..., Any]


class UnverifiedDownloadWarning(UserWarning):
    """A file was downloaded for an entry that has no checksum to verify it with."""


def cached_path(entry: WeightsEntry) -> Path:
    """Where ``entry``'s file lives in the cache (whether or not it is there yet)."""
    if not entry.filename:
        raise WeightsError(f"weights '{entry.name}' have no URL or file name")
    return cached_weights(entry.filename)


def offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _how_to_get_it(entry: WeightsEntry, dest: Path) -> str:
    return (
        f"download {entry.url} on a machine with internet and pass the file with --weights FILE "
        f"(or copy it to {dest})"
    )


def fetch(entry: WeightsEntry, *, progress: bool = True, opener: Opener | None = None) -> Path:
    """The cached file of a URL entry, downloading it first when it is not there."""
    dest = cached_path(entry)
    if dest.is_file():
        return dest
    if entry.url is None:
        raise WeightsError(f"weights '{entry.name}' are not on this machine and have no URL")
    if offline():
        raise WeightsError(
            f"weights '{entry.name}' are not cached and {OFFLINE_ENV} is set; {_how_to_get_it(entry, dest)}"
        )
    if not entry.sha256:
        warnings.warn(f"no checksum is registered for '{entry.name}': {entry.url} is downloaded unverified",
                      UnverifiedDownloadWarning, stacklevel=2)
    try:
        download(entry.url, dest, entry.sha256, progress=progress, opener=opener)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise WeightsError(
            f"could not download '{entry.name}' ({reason}); {_how_to_get_it(entry, dest)}"
        ) from None
    return dest


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    progress: bool = True,
    opener: Opener | None = None,
    chunk: int = 1 << 20,
) -> Path:
    """Stream ``url`` to ``dest`` through a temporary file in the same folder, hashing as it
    goes; rename into place only when the checksum (full or prefix) matches."""
    digest = hashlib.sha256()
    with staged(dest, suffix=".part") as tmp:
        with open(tmp, "wb") as out, (opener or urllib.request.urlopen)(url, timeout=60) as response:
            total = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
            with progress_bar(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=dest.name, enabled=progress) as bar:
                while block := response.read(chunk):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
        actual = digest.hexdigest()
        if sha256 and not checksum_matches(actual, sha256):
            raise WeightsError(
                f"downloaded {url} but its sha256 {actual[:12]}... does not match the expected {sha256}; "
                "nothing was saved"
            )
    return dest
