"""Output paths checked before the slow work, not after it.

An export or a quantization takes seconds to minutes, and its file is written last (staged,
``effnet._files.staged``): without a check first, a folder that cannot be written fails only
at the end, with an error that names the hidden temporary file instead of the user's path.
Every writer overwrites an existing file, as ``cp`` does; callers say so when it happens
(``check_writable`` tells them).

This belongs beside ``staged`` in ``effnet._files``; it lives here until it moves there.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import UsageError


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
