"""effnet._files.staged: a destination is replaced whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from effnet._files import check_writable, staged
from effnet.errors import UsageError


@pytest.mark.parametrize("durable", [False, True])
def test_a_finished_block_replaces_the_file_and_leaves_nothing_else(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "sub" / "out.bin"
    with staged(target, durable=durable) as temporary:
        assert temporary.parent == target.parent and temporary != target
        temporary.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


def test_a_failing_block_keeps_the_old_file_and_removes_its_own(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with staged(target) as temporary:
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_two_writers_do_not_share_a_temporary_name(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with staged(target) as first, staged(target) as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert target.read_bytes() == b"1"  # the outer block finishes last


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_written_file_has_the_mode_the_umask_gives(tmp_path: Path, umask: int, mode: int) -> None:
    import os

    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o644)
    previous = os.umask(umask)
    try:
        with staged(target) as temporary:
            temporary.write_bytes(b"new")  # as libraries do: open for writing, truncate
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == mode


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_writer_that_replaces_the_temporary_still_gives_the_umask_mode(tmp_path: Path, umask: int,
                                                                       mode: int) -> None:
    """safetensors 0.8's save_file writes its own file and renames it over the path it is
    given (mode 0600), as atomic writers do: the mode must come from the umask all the same
    (model.safetensors from `effnet train` and `effnet convert` were 0600)."""
    import os

    import torch
    from safetensors.torch import save_file

    target = tmp_path / "model.safetensors"
    previous = os.umask(umask)
    try:
        with staged(target) as temporary:
            save_file({"weight": torch.zeros(2)}, str(temporary))
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == mode


def test_a_new_file_in_a_new_folder_is_fine_and_nothing_is_created(tmp_path: Path) -> None:
    assert check_writable(tmp_path / "new" / "deeper" / "model.onnx") is False
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_will_be_replaced(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_text("old")
    assert check_writable(tmp_path / "model.onnx") is True
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_folder_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").mkdir()
    with pytest.raises(UsageError, match=f"cannot write {tmp_path / 'model.onnx'}: it is a folder"):
        check_writable(tmp_path / "model.onnx")


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    target = tmp_path / "notes.txt" / "sub" / "model.onnx"
    with pytest.raises(UsageError, match=f"cannot write {target}: {tmp_path / 'notes.txt'} is a file, not a folder"):
        check_writable(target)


def test_a_folder_that_refuses_files_is_named_with_the_target(unwritable_folder: Path) -> None:
    target = unwritable_folder / "model.onnx"
    with pytest.raises(UsageError, match=f"cannot write {target}: cannot create files in {unwritable_folder}") as error:
        check_writable(target)
    assert ".probe" not in str(error.value) and ".tmp" not in str(error.value)


def test_a_failed_write_names_the_destination_not_the_temporary(tmp_path: Path) -> None:
    import errno

    target = tmp_path / "model.onnx"
    with pytest.raises(OSError) as caught:
        with staged(target) as temporary:
            raise OSError(errno.ENOSPC, "No space left on device", str(temporary))
    assert caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_runs_out_of_space_names_the_destination(tmp_path: Path, file_size_limit) -> None:
    """A failed write() through a file object (onnx.save, json.dump) raises an OSError that
    names no file: the CLI's line said only "[Errno 28] No space left on device"."""
    import errno

    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as caught, file_size_limit(1 << 16):
        with staged(target) as temporary, open(temporary, "wb") as handle:
            handle.write(bytes(1 << 17))
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(target)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_safetensors_out_of_space_is_an_os_error_naming_the_destination(tmp_path: Path, file_size_limit) -> None:
    """safetensors reports a failed write as its own SafetensorError, which the CLI would
    show as a traceback (the weights of `effnet train` and `effnet convert`)."""
    import errno

    import torch

    from effnet.weights.io import write_safetensors

    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as caught, file_size_limit(1 << 16):
        write_safetensors({"weight": torch.zeros(1 << 16)}, target, {"format": "effnet"})
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
