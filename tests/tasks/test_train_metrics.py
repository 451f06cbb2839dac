"""The training run's metrics files on a disk that fills up."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from effnet.tasks.training.metrics import MetricsLog


def test_a_record_that_does_not_fit_names_the_file(tmp_path: Path, file_size_limit) -> None:
    """Appending to metrics.jsonl on a full disk raised an OSError naming no file: the run
    ended with "effnet: error: [Errno 28] No space left on device" and nothing more."""
    log = MetricsLog(tmp_path)
    log.add({"event": "step", "step": 1, "loss": 2.5})
    with pytest.raises(OSError) as caught, file_size_limit((tmp_path / "metrics.jsonl").stat().st_size + 10):
        log.add({"event": "step", "step": 2, "loss": 2.25, "note": "x" * 100})
    assert caught.value.errno == errno.EFBIG and caught.value.filename == str(tmp_path / "metrics.jsonl")
    log.restore(up_to_step=2)  # the torn line a full disk leaves is dropped on resume
    assert [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1]
