"""Writing files so that a reader never sees half of one (a leaf module: only ``errors`` of ours).

Every effnet output (weights, checkpoints, ONNX files, reports, downloads) is staged in a
temporary file beside its destination and renamed over it only once it is complete, so an
interrupted or failed write leaves the old file, or none, never a truncated one. The file
gets the permissions any other tool would give it (``0666`` less the umask, e.g. 0644),
set just before the rename: ``mkstemp`` creates 0600 files, and so do writers that replace
the path they are given with their own temporary (safetensors' ``save_file``), which a
server or container running as another user could not read. A write that fails (a full
disk) names the destination, never the hidden temporary file, and ``check_writable`` lets a
long job refuse an unwritable destination before it starts rather than after.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UsageError

#: Errors only a failed write gives: the destination's file system said no (full, over quota,
#: over the file size limit). A write through a file object reports them naming no file.
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


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
    os.close(handle)
    temporary = Path(name)
    try:
        try:
            yield temporary
        except OSError as error:
            if error.filename is not None and Path(error.filename) == temporary:
                error.filename = str(target)  # the user knows the destination, not our temp name
            name_out_of_space(error, target)
            raise
        os.chmod(temporary, 0o666 & ~current_umask())
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


def name_out_of_space(error: OSError, path: str | os.PathLike) -> None:
    """Name ``path`` in an out-of-space ``error`` that names no file (a failed ``write()``
    through a file object), so that its one line says which file did not fit."""
    if error.filename is None and error.errno in OUT_OF_SPACE:
        error.filename = str(path)


def check_writable(path: str | os.PathLike) -> bool:
    """Refuse a ``path`` that cannot be written as a file (it is a folder, a part of it is a
    file, or its folder cannot be created or written to), naming ``path`` itself.

    Returns whether a file is there now, which the write will replace. The folder is not
    created here (a run that fails later leaves nothing behind); its nearest existing parent
    is tried instead, with a probe file created and removed at once, which answers for
    read-only mounts and access lists too, where permission bits do not.
    """
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"cannot write {target}: it is a folder, not a file")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {target}: {folder} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=folder)
    except OSError as error:
        raise UsageError(f"cannot write {target}: cannot create files in {folder} ({error.strerror})") from None
    os.close(handle)
    os.unlink(probe)
    return target.exists()
