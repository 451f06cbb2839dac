"""effnet's glibc malloc setting: big buffers are reused instead of re-faulted (see _malloc.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or platform.libc_ver()[0] != "glibc", reason="the setting only exists for glibc"
)

SRC = str(Path(__file__).resolve().parents[1] / "src")

#: Allocate and free a 64 MiB buffer ten times, like activations across batches; print the
#: allocator and the minor page faults those ten allocations cost.
SCRIPT = """
import ctypes, resource
from effnet._malloc import tune_malloc
print(tune_malloc())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def touch_and_free():
    buffer = libc.malloc(64 << 20)
    ctypes.memset(buffer, 1, 64 << 20)
    libc.free(buffer)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    touch_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def run(**env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "EFFNET_MALLOC")) and k != "LD_PRELOAD"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=clean | {"PYTHONPATH": SRC} | env,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return out[0], int(out[1])


def test_tuned_malloc_reuses_freed_buffers_and_can_be_turned_off() -> None:
    tuned, tuned_faults = run()
    default, default_faults = run(EFFNET_MALLOC="system")
    assert "mmap off" in tuned and "default settings" in default
    pages = 10 * (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert default_faults > pages // 2  # every 64 MiB buffer is a fresh mmap, zero-filled on touch
    assert tuned_faults < pages // 20  # the freed heap is reused


def test_user_tuning_is_respected() -> None:
    described, _ = run(MALLOC_MMAP_MAX_="0")
    assert "tuned by the user" in described
