"""Holding back what third-party converters and runtimes print (a leaf module).

The LiteRT converter and quantizer and ExecuTorch's exporter print progress bars and reports,
log warnings about ops that do not concern a classifier, and their C++ parts write straight
to file descriptor 2 ("Estimated count of arithmetic ops", cpuinfo probes). ``quiet`` holds
all of it back for the duration of a call; errors still reach the user as the exceptions
those libraries raise.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

#: Python loggers the converters write through.
LOGGERS = ("", "absl", "torch.onnx", "torch.export", "torch._export", "onnxscript", "executorch")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Python warnings, logging below ERROR, ``sys.stdout``/``sys.stderr`` and the process's
    file descriptors 1 and 2, all held back inside the block."""
    captured = io.StringIO()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with tempfile.TemporaryFile() as native, warnings.catch_warnings(), \
                contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            os.dup2(native.fileno(), 1)
            os.dup2(native.fileno(), 2)
            warnings.simplefilter("ignore")
            yield
    finally:
        for descriptor, copy in enumerate(saved, start=1):
            os.dup2(copy, descriptor)
            os.close(copy)
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
