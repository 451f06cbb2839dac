"""The one progress bar (tqdm) and its one policy, for every long-running step.

A bar is drawn on stderr only where someone watches it: a terminal, the first process of a
torchrun job (``RANK`` 0), and not after ``--no-progress``. Everywhere else the same object
is returned with drawing disabled, so callers never branch on whether a bar is shown.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm import tqdm


def shown(enabled: bool = True) -> bool:
    """Whether a bar would be drawn now (for callers that log lines instead when it is not)."""
    return enabled and sys.stderr.isatty() and os.environ.get("RANK", "0") == "0"


def progress(iterable: Iterable[Any] | None = None, *, total: int | float | None = None, desc: str = "",
             unit: str = "it", enabled: bool = True, leave: bool = False, **options: Any) -> tqdm:
    """A tqdm bar on stderr that draws only when ``shown(enabled)``; ``options`` go to tqdm."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True, file=sys.stderr,
                disable=not shown(enabled), **options)
