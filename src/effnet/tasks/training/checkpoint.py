"""Checkpoints that survive anything short of losing the disk.

Each save goes to a temporary file in the same folder, is flushed to disk, and only then
renamed over its final name (``os.replace`` is atomic), so a crash or a full disk mid-save
leaves every earlier checkpoint untouched. Only after a successful save are the oldest
checkpoints beyond ``keep`` removed, and the temporary files of saves that were killed.
Files load with ``torch.load(weights_only=True)``: random-number states are stored as
tensors and plain Python values, never pickled objects.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from ..._files import staged
from ...errors import EffnetError

_NAME = re.compile(r"^checkpoint-(\d{8})\.pt$")


class CheckpointError(EffnetError):
    """A checkpoint that cannot be written or read; the message says what is still intact."""


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states, loadable with weights_only."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": saved["key"].numpy().astype(np.uint32), "pos": saved["pos"]},
        "has_gauss": saved["has_gauss"],
        "gauss": saved["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _WriteWatch:
    """A file's ``write`` for ``torch.save``, keeping the file system's error: torch's zip
    writer replaces it with its own ("unexpected pos 704 vs 598")."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = self.error or error
            raise

    def __getattr__(self, name: str) -> Any:  # the rest of the file's interface, as it is
        return getattr(self.handle, name)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a staged file, fsynced with its folder: a kill or a power cut
    mid-save leaves the previous checkpoints intact. A failed write raises the file system's
    ``OSError`` (a full disk), not torch's account of it."""
    with staged(path, durable=True) as temporary, open(temporary, "wb") as handle:
        watch = _WriteWatch(handle)
        try:
            torch.save(obj, watch)
        except RuntimeError:
            if watch.error is not None:
                raise watch.error from None
            raise


class CheckpointManager:
    """``checkpoint-<global step>.pt`` files in one folder; the newest ``keep`` are kept."""

    def __init__(self, folder: str | Path, keep: int) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def checkpoints(self) -> list[Path]:
        """Existing checkpoints, oldest first (by global step)."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := _NAME.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def path_for(self, global_step: int) -> Path:
        return self.folder / f"checkpoint-{global_step:08d}.pt"

    def save(self, state: dict[str, Any], global_step: int) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.path_for(global_step)
        try:
            atomic_torch_save(state, path)
        except (OSError, RuntimeError) as error:
            # torch.save reports a failed write (disk full, quota) as RuntimeError from its zip
            # writer ("PytorchStreamWriter failed writing file"), the file system as OSError
            previous = self.latest()
            kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
            reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[0]
            raise CheckpointError(f"could not write {path} ({reason}); {kept}") from None
        for old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)
        for leftover in self.folder.glob(".checkpoint-*.tmp"):  # staged by a save that was killed (SIGKILL)
            leftover.unlink(missing_ok=True)
        return path

    @staticmethod
    def load(path: str | Path) -> dict[str, Any]:
        """A checkpoint's contents; a missing, empty, truncated or foreign file is one line."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        if path.stat().st_size == 0:
            raise CheckpointError(f"{path}: cannot read checkpoint (empty file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - damaged bytes surface as struct.error, IndexError, ...
            # (weights_only: nothing in the file runs, so any failure means "not readable")
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            raise CheckpointError(f"{path}: cannot read checkpoint ({reason})") from None
        if not isinstance(state, dict) or state.get("format") not in (None, "effnet.train"):
            raise CheckpointError(f"{path}: not an effnet training checkpoint")
        return state

    def load_newest_readable(self, warn: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
        """The newest checkpoint that can be read: a corrupt newest one (a disk that filled,
        a copy cut short) must not block resuming from the intact one before it."""
        problems: list[str] = []
        for path in reversed(self.checkpoints()):
            try:
                state = self.load(path)
            except CheckpointError as error:
                problems.append(str(error))
                continue
            for problem in problems:
                warn(f"warning: {problem}; resuming from the older {path.name} instead")
            return path, state
        if not problems:
            raise CheckpointError(f"{self.folder}: no checkpoint to resume from")
        raise CheckpointError(f"no readable checkpoint in {self.folder} ({problems[0]})")
