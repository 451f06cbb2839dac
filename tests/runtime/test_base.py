"""What every engine shares (``runtime.base``): runs at a file's fixed batch size."""

from __future__ import annotations

import numpy as np
import pytest

from effnet.runtime.base import run_in_fixed_batches


@pytest.mark.parametrize("rows, size", [(10, 4), (4, 4), (3, 1), (1, 3), (7, None)])
def test_fixed_batches_see_only_their_size_and_give_every_row_once(rows: int, size: int | None) -> None:
    batch = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2)
    seen: list[int] = []

    def run(chunk: np.ndarray) -> np.ndarray:
        seen.append(len(chunk))
        return chunk.sum(axis=1, keepdims=True) * 10  # one output row per input row, as logits are

    out = run_in_fixed_batches(run, batch, size)
    np.testing.assert_array_equal(out, batch.sum(axis=1, keepdims=True) * 10)
    assert set(seen) == {size if size is not None else rows}
