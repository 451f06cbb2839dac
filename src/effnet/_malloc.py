"""Keep glibc malloc from handing big tensors back to the kernel after every forward pass.

Why: glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it with ``munmap`` when freed, and it trims the heap top when more than
``M_TRIM_THRESHOLD`` bytes are free. A batch of 16 through EfficientNet-B0 allocates and
frees activations of 25-80 MiB per layer, so every iteration pays for zero-filled page
faults on hundreds of MiB: ``benchmarks/malloc_bench.py`` measures eager B0 at batch 16 on
2 threads about 2x slower than with mmap disabled (figures in ``benchmarks/RESULTS.md``).

What: at CLI start (``effnet.cli.main``) effnet calls ``mallopt(M_MMAP_MAX, 0)`` and raises
``M_TRIM_THRESHOLD``, so freed activations stay in the heap and are reused, like tcmalloc or
jemalloc do. The cost is that the process keeps its peak heap instead of shrinking after a
spike, which for predict/eval/train/serve is the memory they need again on the next batch.

It is a no-op off glibc, when another allocator is preloaded (tcmalloc, jemalloc, mimalloc),
when the user already tunes glibc malloc through its environment variables, and when
``EFFNET_MALLOC=system`` opts out. Library users (``effnet.Predictor`` in their own process)
are left alone unless they call :func:`tune_malloc` themselves.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4

#: Free heap kept before trimming: the largest value ``mallopt``'s C ``int`` argument takes
#: (2 GiB), above the per-batch working set of all but the largest variants at big batches.
TRIM_THRESHOLD_BYTES = 2**31 - 1

OPT_OUT_VARIABLE = "EFFNET_MALLOC"
_USER_TUNING = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")
_OTHER_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")

_state = {"allocator": ""}


def _preloaded_allocator() -> str | None:
    preload = os.environ.get("LD_PRELOAD", "")
    return next((name for name in _OTHER_ALLOCATORS if name in preload), None)


def _user_tuned() -> bool:
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(os.environ.get(name) for name in _USER_TUNING) or "glibc.malloc." in tunables


def tune_malloc() -> str:
    """Apply the setting once for this process; returns what :func:`allocator` will report."""
    if _state["allocator"]:
        return _state["allocator"]
    other = _preloaded_allocator()
    if other:
        described = f"{other} (LD_PRELOAD)"
    elif sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        described = "system malloc (not glibc)"
    elif os.environ.get(OPT_OUT_VARIABLE, "").lower() in ("system", "default", "off", "0"):
        described = f"glibc malloc, default settings ({OPT_OUT_VARIABLE}={os.environ[OPT_OUT_VARIABLE]})"
    elif _user_tuned():
        described = "glibc malloc, tuned by the user's MALLOC_*/GLIBC_TUNABLES environment"
    else:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        described = (
            f"glibc malloc, mmap off, trim threshold 2 GiB (effnet)"
            if ok else "glibc malloc, default settings (mallopt refused)"
        )
    _state["allocator"] = described
    return described


def allocator() -> str:
    """The allocator in use, in words, for benchmark headers (``tune_malloc`` not forced)."""
    if _state["allocator"]:
        return _state["allocator"]
    other = _preloaded_allocator()
    if other:
        return f"{other} (LD_PRELOAD)"
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":
        return "glibc malloc, tuned by environment" if _user_tuned() else "glibc malloc, default settings"
    return "system malloc"
