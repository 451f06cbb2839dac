"""Writing files so that a reader never sees half of one (a leaf module: no effnet imports).

Every effnet output (weights, checkpoints, ONNX files, reports, downloads) is staged in a
temporary file beside its destination and renamed over it only once it is complete, so an
interrupted or failed write leaves the old file, or none, never a truncated one. The file
gets the permissions any other tool would give it (``0666`` less the umask, e.g. 0644):
``mkstemp`` creates 0600 files, which a server or container running as another user could
not read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def current_umask() -> int:
    """The process umask (read by setting and restoring it: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def staged(path: str | os.PathLike, suffix: str = ".tmp", durable: bool = False) -> Iterator[Path]:
    """A fresh temporary path in ``path``'s folder, renamed to ``path`` when the block ends
    normally and removed when it raises (the block may check the file before it counts).

    ``durable``: fsync the file and its folder, so the rename survives a power cut too
    (checkpoints, whose loss costs hours).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.fchmod(handle, 0o666 & ~current_umask())
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        if durable:
            with open(temporary, "rb+") as written:
                os.fsync(written.fileno())
        os.replace(temporary, target)
        if durable:
            folder = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    finally:
        temporary.unlink(missing_ok=True)
