"""Output paths are checked before any work, with errors that name the user's path."""

from __future__ import annotations

from pathlib import Path

import pytest

from effnet.deploy.outputs import check_writable
from effnet.errors import UsageError


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
