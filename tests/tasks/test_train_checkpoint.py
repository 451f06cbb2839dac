"""Checkpoints: atomic writes, a full disk, keeping the newest N, random-number states."""

from __future__ import annotations

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from effnet.tasks.training import checkpoint as checkpoint_module
from effnet.tasks.training.checkpoint import CheckpointError, CheckpointManager, rng_state, set_rng_state


def state(value: float) -> dict:
    return {"model": {"w": torch.full((4,), value)}, "global_step": int(value)}


def test_keeps_the_newest_n(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=2)
    for step in (5, 10, 15, 20):
        manager.save(state(step), step)
    assert [p.name for p in manager.checkpoints()] == ["checkpoint-00000015.pt", "checkpoint-00000020.pt"]
    assert manager.load(manager.latest())["global_step"] == 20


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save(state(1.0), 1)
    before = (tmp_path / "checkpoint-00000001.pt").read_bytes()
    real_save = torch.save

    def save_then_fail(obj, handle, *args, **kwargs):  # half the bytes land, then the disk is full
        real_save(obj, handle, *args, **kwargs)
        handle.truncate(100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module.torch, "save", save_then_fail)
    with pytest.raises(CheckpointError) as caught:
        manager.save(state(2.0), 2)
    message = str(caught.value)
    assert "No space left on device" in message and "checkpoint-00000001.pt is intact" in message
    assert "\n" not in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-00000001.pt"]  # no temp file, no partial
    assert (tmp_path / "checkpoint-00000001.pt").read_bytes() == before
    monkeypatch.undo()
    assert torch.equal(manager.load(manager.latest())["model"]["w"], torch.full((4,), 1.0))


def test_unreadable_checkpoint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint-00000003.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        CheckpointManager.load(path)


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leave a cached Gaussian in numpy's state
    manager = CheckpointManager(tmp_path, keep=1)
    manager.save({"rng": rng_state()}, 1)
    expected = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(manager.load(manager.latest())["rng"])
    again = (random.random(), np.random.standard_normal(), np.random.rand(), torch.rand(3))
    assert expected[:3] == again[:3]
    assert torch.equal(expected[3], again[3])


def test_a_failed_torch_write_is_one_line_and_keeps_the_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk reaches torch.save's zip writer first, which raises RuntimeError, not OSError."""
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(state(1.0), 1)

    def disk_full(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:783] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(checkpoint_module.torch, "save", disk_full)
    with pytest.raises(CheckpointError) as caught:
        manager.save(state(2.0), 2)
    message = str(caught.value)
    assert "PytorchStreamWriter failed writing file" in message and "checkpoint-00000001.pt is intact" in message
    assert "\n" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000001.pt"]


def test_a_save_removes_what_a_killed_save_left(tmp_path: Path) -> None:
    """SIGKILL mid-save leaves the staged temporary (``_files.staged``'s ``.<name>.<random>.tmp``)
    behind, up to a checkpoint's size each time: a preempted machine would fill its disk."""
    manager = CheckpointManager(tmp_path, keep=2)
    leftover = tmp_path / ".checkpoint-00000005.pt.qd15bsub.tmp"
    leftover.write_bytes(b"PK\x03\x04 cut short")
    manager.save(state(10.0), 10)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000010.pt"]


def test_a_checkpoint_that_does_not_fit_says_why(tmp_path: Path, file_size_limit) -> None:
    """torch's zip writer turns the file system's refusal into "unexpected pos 704 vs 598":
    the message gives the file system's reason instead."""
    manager = CheckpointManager(tmp_path, keep=2)
    manager.save(state(1.0), 1)
    big = {"model": {"w": torch.zeros(1 << 18)}, "global_step": 2}
    with pytest.raises(CheckpointError) as caught, file_size_limit(1 << 16):
        manager.save(big, 2)
    assert str(caught.value) == (f"could not write {tmp_path / 'checkpoint-00000002.pt'} (File too large); "
                                 "the previous checkpoint checkpoint-00000001.pt is intact")
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000001.pt"]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04", b"\x80\x02"])
def test_an_empty_or_truncated_checkpoint_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "checkpoint-00000003.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as caught:
        CheckpointManager.load(path)
    assert "\n" not in str(caught.value)


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path: Path) -> None:
    manager = CheckpointManager(tmp_path, keep=3)
    for step in (5, 10, 15):
        manager.save(state(step), step)
    (tmp_path / "checkpoint-00000015.pt").write_bytes(b"")  # the newest was cut short
    warnings: list[str] = []
    path, loaded = manager.load_newest_readable(warnings.append)
    assert path.name == "checkpoint-00000010.pt" and loaded["global_step"] == 10
    assert len(warnings) == 1 and "checkpoint-00000015.pt" in warnings[0] and "checkpoint-00000010.pt" in warnings[0]
    for step in (5, 10):
        (tmp_path / f"checkpoint-{step:08d}.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        manager.load_newest_readable(warnings.append)
