"""Where downloaded weights live: one folder per user, shared by every run.

``$EFFNET_CACHE`` if set, else ``$XDG_CACHE_HOME/effnet`` (``~/.cache/effnet``). A leaf
module so that an entry can say where its file would be without importing the downloader.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EFFNET_CACHE"


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "effnet"


def cached_weights(filename: str) -> Path:
    """Where a downloaded weights file of this name lives (whether or not it is there yet)."""
    return cache_dir() / "weights" / filename
